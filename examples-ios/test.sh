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

swift_setup "the iOS example's build and tests" || exit 0
require_swift_bindings

say "examples-ios: swift build (the model and the terminal example; warnings are errors)"
(cd examples-ios && swift build "${swift_flags[@]}")
say "examples-ios: swift test (alice's and bob's RoomModels against real roomstate servers)"
(cd examples-ios && swift test "${swift_flags[@]}")
say "examples-ios: the terminal example, alice and bob in one room"
EXAMPLE_BIN="$(cd examples-ios && swift build "${swift_flags[@]}" --show-bin-path)/roomstate-example" \
  bash examples-ios/scripted-session.sh
