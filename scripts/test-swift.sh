#!/usr/bin/env bash
# The Swift package on Linux: generates the bindings (scripts/bindings.sh builds the
# engine's libroomstate.so and the roomstate server), builds bindings/swift with warnings
# as errors and runs its XCTest suite against real `roomstate serve` processes, then
# builds the consumer package (examples-swift-consumer, which depends on it by path and
# holds the README's Swift code: crates/server/tests/e2e/readme.rs checks that every swift
# block of README.md and bindings/swift/*.md is a marked region of it) and runs it
# against a server.
#
# Needs a Swift toolchain (swift on PATH, or in /opt/swift/usr/bin); without one it says
# so and skips. The XCFramework and iOS builds need a Mac: scripts/build-xcframework.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

swift_setup "the Swift package's build and tests" || exit 0
swift --version 2>&1 | head -1
scripts/bindings.sh

say "bindings/swift: swift build (warnings are errors)"
(cd bindings/swift && swift build "${swift_flags[@]}")
say "bindings/swift: swift test, against real roomstate servers"
(cd bindings/swift && swift test "${swift_flags[@]}")

say "examples-swift-consumer: build (RoomState as a path dependency), run against a server"
(cd examples-swift-consumer && swift build "${swift_flags[@]}")
scratch="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
"$ROOMSTATE_BIN" serve --bind 127.0.0.1:0 --keys consumerkey:consumersecret >"$scratch/out" 2>"$scratch/err" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$scratch/out" && break; sleep 0.1; done
url="$(sed -n 's/^roomstate listening on //p' "$scratch/out")"
[ -n "$url" ] || { cat "$scratch/err" >&2; echo "the server did not start" >&2; exit 1; }
token="$(ROOMSTATE_API_KEY=consumerkey ROOMSTATE_API_SECRET=consumersecret \
  "$ROOMSTATE_BIN" token create --room readme --identity alice --can-update-metadata)"
(cd examples-swift-consumer && "$(swift build "${swift_flags[@]}" --show-bin-path)/RoomStateConsumer" "$url" "$token")
