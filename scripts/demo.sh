#!/usr/bin/env bash
# Builds roomstate, starts the server on its in-memory default (--dev keys), and runs two
# clients against it so you can watch state sync. Leaves nothing running.
#
#   scripts/demo.sh             one node, rooms in memory
#   scripts/demo.sh --cluster   two nodes sharing rooms through a redis-server (started
#                               here on a free port); alice talks to one, bob to the other
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
cluster=false
[ "${1:-}" = "--cluster" ] && cluster=true
$cluster && { command -v redis-server >/dev/null 2>&1 || apt_install redis-server; }
cargo build --release -p roomstate-server --bin roomstate --example sync_demo
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT

# Starts a node; prints its URL once it listens.
start_node() {
  local log="$dir/node$1.log"
  shift
  target/release/roomstate serve --dev --bind 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  local url
  url=$(sed -n 's/^roomstate listening on //p' "$log")
  [ -n "$url" ] || { cat "$log" >&2; echo "the server did not start" >&2; exit 1; }
  echo "$url"
}

if $cluster; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$dir" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis="redis://127.0.0.1:$port/0"
  url=$(start_node 1 --redis "$redis" --node-id node-1)
  url2=$(start_node 2 --redis "$redis" --node-id node-2)
  echo "redis: $redis"
  echo "node-1: $url, node-2: $url2 (roomstate serve --dev --redis $redis)"
  ROOMSTATE_URL="$url" ROOMSTATE_URL_2="$url2" target/release/examples/sync_demo
else
  url=$(start_node 1)
  echo "server: $url (roomstate serve --dev)"
  ROOMSTATE_URL="$url" target/release/examples/sync_demo
fi
