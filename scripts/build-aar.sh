#!/usr/bin/env bash
# With the Android NDK and cargo-ndk installed (cargo install cargo-ndk; ANDROID_NDK_HOME
# set) and Gradle: builds the engine for arm64-v8a, armeabi-v7a and x86_64, generates the
# Kotlin bindings, and assembles bindings/android/build/outputs/aar/*.aar.
#
# Not run by this repository's CI: it has no Android NDK or SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
command -v cargo-ndk >/dev/null || { echo "install cargo-ndk: cargo install cargo-ndk" >&2; exit 1; }

rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
say "building the engine for Android"
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o bindings/android/src/main/jniLibs \
  build -p roomstate --lib --profile release-mobile

say "generating the Kotlin bindings"
cargo build -p roomstate --lib
cargo run -q -p uniffi-bindgen -- generate --library "$(target_dir)/debug/libroomstate.so" \
  --language kotlin --no-format --out-dir bindings/android/build/generated/uniffi

say "assembling the AAR"
(cd bindings/android && gradle assembleRelease)
ls bindings/android/build/outputs/aar/
