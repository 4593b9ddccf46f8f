#!/usr/bin/env bash
# Runs every test: formatting, lints, the Rust suites (unit tests and end-to-end tests
# against real `roomstate serve` processes, LiveKit's Rust and Node server SDKs among the
# clients), then the Kotlin bindings' JUnit suite on the JVM against a real server.
# Installs what the tests need (JDK, Maven, Node packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
command -v javac >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
command -v npm >/dev/null 2>&1 || apt_install nodejs npm

say "LiveKit's Node server SDK, for the server API acceptance tests"
npm ci --prefix crates/server/tests/sdk-js --no-audit --no-fund --loglevel=error

say "format"
cargo fmt --all -- --check
say "lints"
cargo clippy --workspace --all-targets -- -D warnings
say "Rust tests (unit, and end to end against real servers)"
cargo test --workspace

say "Kotlin bindings: generate, compile, and test on the JVM against a real server"
scripts/bindings.sh
libdir="$(target_dir)/debug"
(cd bindings/kotlin && mvn -B --no-transfer-progress test -Droomstate.libdir="$libdir")
