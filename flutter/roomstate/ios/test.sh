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

swift_setup "the Flutter plugin's iOS side" || exit 0
require_swift_bindings

package=flutter/roomstate/ios/roomstate
say "$package: swift build (warnings are errors)"
(cd "$package" && swift build "${swift_flags[@]}")
say "$package: swift test, against real roomstate servers"
(cd "$package" && swift test "${swift_flags[@]}" "$@")
say "flutter/roomstate/ios/adapter-check: the FlutterPlugin adapter type-checks against a stand-in of Flutter's API"
(cd flutter/roomstate/ios/adapter-check && swift build "${swift_flags[@]}")
