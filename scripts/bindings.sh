#!/usr/bin/env bash
# Builds the engine and generates its Kotlin and Swift bindings with the workspace's own
# uniffi-bindgen (the same UniFFI version as the engine). Generated code is written under
# bindings/ into folders git ignores: it is produced at build time, never edited.
#
#   scripts/bindings.sh [--release]      # debug by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust

profile=debug
cargo_profile=()
if [ "${1:-}" = "--release" ]; then profile=release; cargo_profile=(--release); fi

say "building the engine library ($profile) and the roomstate server"
cargo build "${cargo_profile[@]}" -p roomstate --lib
cargo build "${cargo_profile[@]}" -p roomstate-server --bin roomstate
cargo build "${cargo_profile[@]}" -p uniffi-bindgen

out="$(target_dir)/$profile"
case "$(uname -s)" in
  Darwin) library="$out/libroomstate.dylib" ;;
  *) library="$out/libroomstate.so" ;;
esac

say "generating Kotlin into bindings/kotlin/target/generated-sources/uniffi"
rm -rf bindings/kotlin/target/generated-sources/uniffi
"$out/uniffi-bindgen" generate --library "$library" --language kotlin --no-format \
  --out-dir bindings/kotlin/target/generated-sources/uniffi

say "generating Swift into bindings/swift (Sources/RoomState/Generated, Generated/RoomStateFFI)"
scripts/generate-swift.sh "$out/uniffi-bindgen" "$library"
