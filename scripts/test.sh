#!/usr/bin/env bash
# Runs every test: formatting, lints, the Rust suites (unit tests and end-to-end tests
# against real `roomstate serve` processes, LiveKit's Rust and Node server SDKs among the
# clients), the demo, then on the JVM the Kotlin bindings, the Android example's model and
# the Flutter plugin's Android side, and on Linux the Swift package, the iOS example's
# model and the Flutter plugin's iOS side, each against real servers.
# The end-to-end suite runs twice: against one node, and against three nodes sharing
# rooms through a real redis-server. Installs what the tests need (JDK, Maven,
# redis-server, Node packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
use_offline_package_sets
command -v javac >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
command -v redis-server >/dev/null 2>&1 || apt_install redis-server

say "LiveKit's Node server SDK, for the server API acceptance tests"
npm ci --prefix crates/server/tests/sdk-js --no-audit --no-fund --loglevel=error

say "format"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "SKIPPED: rustfmt is not installed here (rustup component add rustfmt); the format check did not run"
fi
say "lints"
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets -- -D warnings
else
  echo "SKIPPED: clippy is not installed here (rustup component add clippy); the lints did not run"
fi
say "Rust tests (unit, and end to end against real servers: one node, and the cluster tests)"
cargo test --workspace
say "the end-to-end suite again, every client spread over three nodes on one Redis"
ROOMSTATE_TEST_NODES=3 cargo test -p roomstate-server --test e2e

say "the demo: both clients sync, and it leaves nothing running"
scripts/check-demo.sh

say "Kotlin bindings: generate, compile, and test on the JVM against a real server"
scripts/bindings.sh
libdir="$(target_dir)/debug"
# `install` runs the suite, then puts the jar where the example and the plugin find it.
maven_test_all bindings/kotlin install -Droomstate.libdir="$libdir"
say "the Android example's model: tested on the JVM against a real server"
maven_test_all examples-android/model test -Droomstate.libdir="$libdir"
say "the Flutter plugin's Android side: tested on the JVM against a real server"
maven_test_all flutter/roomstate/android test -Droomstate.libdir="$libdir"

say "Swift package: build and test on Linux against a real server"
bash scripts/test-swift.sh
say "the iOS example's model and terminal example: built and tested on Linux against a real server"
bash examples-ios/test.sh
say "the Flutter plugin's iOS side: built and tested on Linux against a real server"
bash flutter/roomstate/ios/test.sh
