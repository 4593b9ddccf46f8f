#!/usr/bin/env bash
# On a Mac with Xcode: builds the engine (static library) for iOS devices, the iOS
# simulator and macOS, generates the Swift bindings (scripts/generate-swift.sh), and
# packages bindings/swift/RoomStateFFI.xcframework, the binary target Package.swift uses on
# Apple platforms. Its module map is nested, Headers/RoomStateFFI/module.modulemap, so it
# cannot clash with another UniFFI library's in the same app. Then:
#   cd bindings/swift && swift build                  # macOS; Xcode builds it for iOS
#   scripts/package-swift-release.sh URL              # the zip and checksum for a release
#
# Not run here (Linux, no Xcode): scripts/test-swift.sh builds and tests the package on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
[ "$(uname -s)" = Darwin ] || { echo "build-xcframework.sh needs macOS with Xcode" >&2; exit 1; }

# The oldest OS versions the libraries support: Package.swift's platforms (.iOS(.v15), .macOS(.v12)).
export IPHONEOS_DEPLOYMENT_TARGET=15.0 MACOSX_DEPLOYMENT_TARGET=12.0
profile=release-mobile
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${targets[@]}"
for target in "${targets[@]}"; do
  say "building for $target"
  cargo build -p roomstate --lib --profile "$profile" --target "$target"
done

out="$(target_dir)"
lib() { echo "$out/$1/$profile/libroomstate.a"; }
staging="$out/xcframework"
rm -rf "$staging" bindings/swift/RoomStateFFI.xcframework
mkdir -p "$staging/ios-sim" "$staging/macos" "$staging/headers/RoomStateFFI"
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" -output "$staging/ios-sim/libroomstate.a"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" -output "$staging/macos/libroomstate.a"

say "generating the Swift bindings"
cargo build -p uniffi-bindgen
scripts/generate-swift.sh "$out/debug/uniffi-bindgen" "$out/aarch64-apple-darwin/$profile/libroomstate.dylib"
cp bindings/swift/Generated/RoomStateFFI/RoomStateFFI.h "$staging/headers/RoomStateFFI/"
# UniFFI's own module map: the XCFramework's library is linked as the binary target, so
# it needs no `link` line (the Linux one in bindings/swift/Generated has one).
cp "$out/uniffi-swift/RoomStateFFI.modulemap" "$staging/headers/RoomStateFFI/module.modulemap"

say "packaging RoomStateFFI.xcframework"
xcodebuild -create-xcframework \
  -library "$(lib aarch64-apple-ios)" -headers "$staging/headers" \
  -library "$staging/ios-sim/libroomstate.a" -headers "$staging/headers" \
  -library "$staging/macos/libroomstate.a" -headers "$staging/headers" \
  -output bindings/swift/RoomStateFFI.xcframework
