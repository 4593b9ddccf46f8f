#!/usr/bin/env bash
# Builds roomstate, starts the server on its in-memory default (--dev keys), and runs two
# clients against it so you can watch state sync. Leaves nothing running: every process
# it starts is stopped on exit, Ctrl-C included (scripts/check-demo.sh tests that).
#
#   scripts/demo.sh             one node, rooms in memory
#   scripts/demo.sh --cluster   two nodes sharing rooms through a redis-server (started
#                               here on a free port); alice talks to one, bob to the other
#   ROOMSTATE_DEMO_PROFILE=debug scripts/demo.sh   a debug build (quicker to build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
cluster=false
[ "${1:-}" = "--cluster" ] && cluster=true
$cluster && { command -v redis-server >/dev/null 2>&1 || apt_install redis-server; }
profile="${ROOMSTATE_DEMO_PROFILE:-release}"
[ "$profile" = debug ] && profile=dev
cargo build --profile "$profile" -p roomstate-server --bin roomstate --example sync_demo
if [ "$profile" = dev ]; then bin="$(target_dir)/debug"; else bin="$(target_dir)/$profile"; fi
dir=$(mktemp -d)
pids=()
stop_all() {
  [ ${#pids[@]} -eq 0 ] || { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
  rm -rf "$dir"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Starts a node and sets $node_url once it listens. Not called as $(start_node): a
# command substitution is a subshell, and the PID it records would be lost to the trap.
start_node() {
  local log="$dir/node$1.log"
  shift
  "$bin/roomstate" serve --dev --bind 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  node_url=$(sed -n 's/^roomstate listening on //p' "$log")
  [ -n "$node_url" ] || { cat "$log" >&2; echo "the server did not start" >&2; exit 1; }
}

if $cluster; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$dir" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis="redis://127.0.0.1:$port/0"
  start_node 1 --redis "$redis" --node-id node-1
  url=$node_url
  start_node 2 --redis "$redis" --node-id node-2
  url2=$node_url
  echo "redis: $redis"
  echo "node-1: $url, node-2: $url2 (roomstate serve --dev --redis $redis)"
  ROOMSTATE_URL="$url" ROOMSTATE_URL_2="$url2" "$bin/examples/sync_demo"
else
  start_node 1
  echo "server: $node_url (roomstate serve --dev)"
  ROOMSTATE_URL="$node_url" "$bin/examples/sync_demo"
fi
