#!/usr/bin/env bash
# The Flutter plugin's iOS side on Linux, as scripts/test-swift.sh tests bindings/swift:
# builds the plugin's Swift package (ios/roomstate: RoomStateChannelHandler, the plain Swift
# that does the plugin's work; the FlutterPlugin adapter needs Flutter and is skipped) with
# warnings as errors, runs its XCTest suite against real `roomstate serve` processes, then
# type-checks the adapter against a stand-in of Flutter's API (ios/adapter-check).
#
# Needs what scripts/bindings.sh builds (libroomstate.so, the roomstate binary, the
# generated Swift); scripts/test.sh runs this after scripts/test-swift.sh, which runs it.
# Needs a Swift toolchain (swift on PATH, or in /opt/swift/usr/bin); without one it says
# so and skips. Arguments go to `swift test` (e.g. --filter DefectsTests).
set -euo pipefail
cd "$(dirname "$0")/../../.."
. scripts/lib.sh

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
  export PATH="/opt/swift/usr/bin:$PATH"
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "Swift is missing (no swift on PATH or in /opt/swift/usr/bin): skipping the Flutter plugin's iOS side" >&2
  exit 0
fi

libdir="$(target_dir)/debug"
for built in "$libdir/libroomstate.so" "$libdir/roomstate" \
  bindings/swift/Sources/RoomState/Generated/RoomState.swift bindings/swift/Generated/RoomStateFFI/module.modulemap; do
  [ -e "$built" ] || { echo "$built is missing: run scripts/bindings.sh first" >&2; exit 1; }
done
export ROOMSTATE_BIN="$libdir/roomstate"
# The engine is a shared library in the cargo target folder: the linker finds it there,
# and the executables carry that folder as their run path (LD_LIBRARY_PATH for good measure).
swift_flags=(-Xswiftc -warnings-as-errors -Xlinker -L"$libdir" -Xlinker -rpath -Xlinker "$libdir")
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

package=flutter/roomstate/ios/roomstate
say "$package: swift build (warnings are errors)"
(cd "$package" && swift build "${swift_flags[@]}")
say "$package: swift test, against real roomstate servers"
(cd "$package" && swift test "${swift_flags[@]}" "$@")
say "flutter/roomstate/ios/adapter-check: the FlutterPlugin adapter type-checks against a stand-in of Flutter's API"
(cd flutter/roomstate/ios/adapter-check && swift build "${swift_flags[@]}")
