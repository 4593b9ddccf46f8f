#!/usr/bin/env bash
# Runs every test: formatting, lints, and the Rust suites (unit tests and end-to-end
# tests against real `roomstate serve` processes). Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust

say "format"
cargo fmt --all -- --check
say "lints"
cargo clippy --workspace --all-targets -- -D warnings
say "Rust tests (unit, and end to end against real servers)"
cargo test --workspace
