#!/usr/bin/env bash
# Builds roomstate, starts the server on its in-memory default (--dev keys), and runs two
# clients against it so you can watch state sync. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
cargo build --release -p roomstate-server --bin roomstate --example sync_demo
log=$(mktemp)
target/release/roomstate serve --dev --bind 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
url=$(sed -n 's/^roomstate listening on //p' "$log")
[ -n "$url" ] || { cat "$log"; echo "the server did not start" >&2; exit 1; }
echo "server: $url (roomstate serve --dev)"
ROOMSTATE_URL="$url" target/release/examples/sync_demo
