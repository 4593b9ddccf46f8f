#!/usr/bin/env bash
# On a Mac, after scripts/build-xcframework.sh: zips RoomStateFFI.xcframework for a
# release and prints the binaryTarget a release's Package.swift declares, with the
# checksum SwiftPM verifies.
#
#   scripts/package-swift-release.sh https://github.com/OWNER/roomstate/releases/download/v0.1.0
#
# Upload target/swift-release/RoomStateFFI.xcframework.zip to that URL. The release tag
# carries the generated Swift of the same build (git add -f
# bindings/swift/Sources/RoomState/Generated/RoomState.swift) and the printed binaryTarget
# in place of binaryTarget(path:) (see bindings/swift/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ $# -eq 1 ] || { echo "usage: $0 BASE_URL (where RoomStateFFI.xcframework.zip will be downloadable)" >&2; exit 1; }
base_url="${1%/}"
[ "$(uname -s)" = Darwin ] || { echo "package-swift-release.sh needs macOS (ditto, swift)" >&2; exit 1; }
[ -d bindings/swift/RoomStateFFI.xcframework ] || { echo "run scripts/build-xcframework.sh first" >&2; exit 1; }

out="$(target_dir)/swift-release"
rm -rf "$out"
mkdir -p "$out"
# ditto keeps the framework's symlinks and leaves out macOS resource forks.
ditto -c -k --sequesterRsrc --keepParent bindings/swift/RoomStateFFI.xcframework "$out/RoomStateFFI.xcframework.zip"
checksum="$(cd bindings/swift && swift package compute-checksum "$out/RoomStateFFI.xcframework.zip")"

say "$out/RoomStateFFI.xcframework.zip"
cat <<TARGET
.binaryTarget(
    name: "RoomStateFFI",
    url: "$base_url/RoomStateFFI.xcframework.zip",
    checksum: "$checksum"
)
TARGET
