#!/usr/bin/env bash
# Runs scripts/demo.sh (one node, then --cluster) on a debug build and checks what a new
# user relies on: the two clients saw each other's changes, and the demo left no server
# or redis-server running behind it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# The PIDs of processes a demo starts: its nodes (`serve --dev`) and its redis-server.
demo_processes() { pgrep -f 'roomstate serve --dev --bind 127.0.0.1:0|redis-server 127.0.0.1:' | sort || true; }

for mode in "" --cluster; do
  before=$(demo_processes)
  log=$(mktemp)
  ROOMSTATE_DEMO_PROFILE=debug bash scripts/demo.sh $mode >"$log" 2>&1 || { cat "$log"; echo "demo.sh $mode failed" >&2; exit 1; }
  # Each client must have heard the other's pinned message and raised hand.
  for expected in 'store "pinned"' 'changed \["hand"\]'; do
    grep -q "$expected" "$log" || { cat "$log"; echo "demo.sh $mode: no line matching $expected" >&2; exit 1; }
  done
  left=$(comm -13 <(echo "$before") <(demo_processes))
  if [ -n "$left" ]; then
    ps -o pid,args -p $left >&2 || true
    echo "demo.sh $mode left processes running: $left" >&2
    exit 1
  fi
  rm -f "$log"
  echo "demo.sh $mode: clients synced, nothing left running"
done
