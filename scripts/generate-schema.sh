#!/usr/bin/env bash
# Writes docs/protocol.schema.json, the JSON Schema of the wire protocol, from the Rust
# types in crates/protocol (the test suite fails when the file is stale).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
cargo run -q -p roomstate-protocol --features schema --example schema > docs/protocol.schema.json
echo "wrote docs/protocol.schema.json"
