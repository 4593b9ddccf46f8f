#!/usr/bin/env bash
# On a Mac with Xcode: builds the engine for iOS devices, the iOS simulator and macOS,
# generates the Swift bindings, and packages bindings/swift/RoomStateFFI.xcframework for
# the Swift package. Then: cd bindings/swift && ROOMSTATE_BIN=../../target/debug/roomstate swift test
#
# Not run by this repository's CI: it has no Swift toolchain or Xcode.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
[ "$(uname -s)" = Darwin ] || { echo "build-xcframework.sh needs macOS with Xcode" >&2; exit 1; }

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
mkdir -p "$staging/ios-sim" "$staging/macos" "$staging/headers"
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" -output "$staging/ios-sim/libroomstate.a"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" -output "$staging/macos/libroomstate.a"

say "generating the Swift bindings"
cargo build -p roomstate --lib --profile "$profile" --target aarch64-apple-darwin
cargo run -q -p uniffi-bindgen -- generate --library "$out/aarch64-apple-darwin/$profile/libroomstate.dylib" \
  --language swift --no-format --out-dir "$staging/generated"
mkdir -p bindings/swift/Sources/RoomState/Generated
cp "$staging/generated/RoomState.swift" bindings/swift/Sources/RoomState/Generated/
cp "$staging/generated/RoomStateFFI.h" "$staging/headers/"
cp "$staging/generated/RoomStateFFI.modulemap" "$staging/headers/module.modulemap"

say "packaging RoomStateFFI.xcframework"
xcodebuild -create-xcframework \
  -library "$(lib aarch64-apple-ios)" -headers "$staging/headers" \
  -library "$staging/ios-sim/libroomstate.a" -headers "$staging/headers" \
  -library "$staging/macos/libroomstate.a" -headers "$staging/headers" \
  -output bindings/swift/RoomStateFFI.xcframework
