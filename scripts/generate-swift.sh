#!/usr/bin/env bash
# Generates the Swift bindings from a built engine library with the workspace's own
# uniffi-bindgen, into folders git ignores (scripts/bindings.sh and
# scripts/build-xcframework.sh call it):
#   bindings/swift/Sources/RoomState/Generated/RoomState.swift   the RoomState target's
#   bindings/swift/Generated/RoomStateFFI/RoomStateFFI.h          the C module RoomStateFFI
#   bindings/swift/Generated/RoomStateFFI/module.modulemap        (Linux: links libroomstate)
#
#   scripts/generate-swift.sh UNIFFI_BINDGEN LIBRARY
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
bindgen="$1"
library="$2"

staging="$(target_dir)/uniffi-swift"
rm -rf "$staging" bindings/swift/Sources/RoomState/Generated bindings/swift/Generated
"$bindgen" generate --library "$library" --language swift --no-format --out-dir "$staging"

# UniFFI 0.32.2 names a renamed callback interface's vtable setter after the new name
# (uniffi.toml renames Logger to RoomStateLogger), but the library exports it under the
# Rust name: call that one. A no-op once UniFFI gets it right.
sed -i 's/uniffi_roomstate_fn_init_callback_vtable_roomstatelogger/uniffi_roomstate_fn_init_callback_vtable_logger/g' \
  "$staging/RoomState.swift" "$staging/RoomStateFFI.h"

mkdir -p bindings/swift/Sources/RoomState/Generated bindings/swift/Generated/RoomStateFFI
mv "$staging/RoomState.swift" bindings/swift/Sources/RoomState/Generated/
mv "$staging/RoomStateFFI.h" bindings/swift/Generated/RoomStateFFI/
# UniFFI's module map, plus the library to link (used on Linux; the XCFramework gets
# UniFFI's own, which needs no link line: the static library is linked as the binary target).
sed 's/^}$/    link "roomstate"\n}/' "$staging/RoomStateFFI.modulemap" \
  > bindings/swift/Generated/RoomStateFFI/module.modulemap
