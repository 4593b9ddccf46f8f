#!/usr/bin/env bash
# The iOS example's package on Linux, as scripts/test-swift.sh tests bindings/swift: builds
# the model (RoomExampleModel) and the terminal example with warnings as errors, runs the
# model's XCTest suite (two RoomModels, alice and bob, against real `roomstate serve`
# processes), then runs the terminal example as alice and bob against one server
# (scripted-session.sh). The SwiftUI screens (App/) need Xcode: not built here.
#
# Needs what scripts/bindings.sh builds (libroomstate.so, the roomstate binary, the
# generated Swift); scripts/test.sh runs this after scripts/test-swift.sh, which runs it.
# Needs a Swift toolchain (swift on PATH, or in /opt/swift/usr/bin); without one it says
# so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
  export PATH="/opt/swift/usr/bin:$PATH"
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "Swift is missing (no swift on PATH or in /opt/swift/usr/bin): skipping the iOS example's build and tests" >&2
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

say "examples-ios: swift build (the model and the terminal example; warnings are errors)"
(cd examples-ios && swift build "${swift_flags[@]}")
say "examples-ios: swift test (alice's and bob's RoomModels against real roomstate servers)"
(cd examples-ios && swift test "${swift_flags[@]}")
say "examples-ios: the terminal example, alice and bob in one room"
EXAMPLE_BIN="$(cd examples-ios && swift build "${swift_flags[@]}" --show-bin-path)/roomstate-example" \
  bash examples-ios/scripted-session.sh
