#!/usr/bin/env bash
# The terminal example as two people would use it in two terminals, scripted: alice and
# bob each run `roomstate-example` against one server, commands are typed into their stdin
# one at a time, each waiting until the screens show what it should. Prints both
# transcripts; fails if something did not show up within 20 s.
#
#   examples-ios/scripted-session.sh
#       starts its own server (roomstate serve --dev on a free port) and mints the tokens
#   URL=ws://127.0.0.1:7880 ALICE_TOKEN=... BOB_TOKEN=... examples-ios/scripted-session.sh
#       uses a server already running (scripts/example-server.sh prints the tokens)
#
# Needs the example built (examples-ios/test.sh builds it) and the engine's target/debug.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

libdir="$(target_dir)/debug"
roomstate="${ROOMSTATE_BIN:-$libdir/roomstate}"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
example="${EXAMPLE_BIN:-examples-ios/.build/debug/roomstate-example}"
[ -x "$example" ] || { echo "$example is missing: run examples-ios/test.sh (or swift build in examples-ios) first" >&2; exit 1; }

scratch="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

if [ -z "${URL:-}" ]; then
  "$roomstate" serve --dev --bind 127.0.0.1:0 >"$scratch/server.out" 2>"$scratch/server.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$scratch/server.out" && break; sleep 0.1; done
  URL="$(sed -n 's/^roomstate listening on //p' "$scratch/server.out")"
  [ -n "$URL" ] || { cat "$scratch/server.err" >&2; echo "the server did not start" >&2; exit 1; }
  mint() {
    "$roomstate" token create --api-key devkey --api-secret secret --room example \
      --identity "$1" --can-update-metadata --valid-for 1h
  }
  ALICE_TOKEN="$(mint alice)"
  BOB_TOKEN="$(mint bob)"
fi
echo "server: $URL"

# start NAME TOKEN: runs the example with a FIFO as its stdin, kept open as fd NAME_fd.
start() {
  mkfifo "$scratch/$1.in"
  "$example" "$URL" "$2" <"$scratch/$1.in" >"$scratch/$1.out" 2>"$scratch/$1.err" &
  pids+=($!)
  eval "${1}_pid=$!"
  local fd
  exec {fd}>"$scratch/$1.in"
  eval "${1}_fd=$fd"
}

# type NAME COMMAND...: a line on NAME's stdin.
type_() {
  local fd="${1}_fd"
  shift
  printf '%s\n' "$*" >&"${!fd}"
}

# expect NAME LINE: waits until NAME's output has LINE (the whole line) after the mark
# set by the last `mark NAME`.
declare -A marks
mark() { marks[$1]=$(wc -l <"$scratch/$1.out"); }
expect() {
  local name="$1" line="$2"
  for _ in $(seq 200); do
    tail -n +"$((${marks[$name]:-0} + 1))" "$scratch/$name.out" | grep -qxF -- "$line" && return 0
    sleep 0.1
  done
  echo "FAILED: $name never showed: $line" >&2
  show_transcripts >&2
  exit 1
}

show_transcripts() {
  for name in alice bob; do
    printf '\n----- %s: roomstate-example %s <%s token> -----\n' "$name" "$URL" "$name"
    cat "$scratch/$name.out"
    [ -s "$scratch/$name.err" ] && { echo "(stderr)"; cat "$scratch/$name.err"; }
  done
  return 0
}

start alice "$ALICE_TOKEN"
expect alice "[alice] Connected"
start bob "$BOB_TOKEN"
expect bob "  participants: alice, bob (you)"
expect alice "  participants: alice (you), bob"

mark bob
type_ alice pin Welcome to the example
expect bob '  pinned:       "Welcome to the example" (by alice)'

mark alice
type_ bob hand up
expect alice "  participants: alice (you), bob ✋"

# Both claim the spotlight at once: one holds it, both show the same.
mark alice; mark bob
type_ alice spotlight
type_ bob spotlight
for _ in $(seq 200); do
  a="$(grep '^  spotlight:' "$scratch/alice.out" | tail -1 | sed 's/ (you)//')"
  b="$(grep '^  spotlight:' "$scratch/bob.out" | tail -1 | sed 's/ (you)//')"
  [ "$a" = "$b" ] && [ "$a" != "  spotlight:    nobody" ] && break
  sleep 0.1
done
[ "$a" = "$b" ] || { echo "FAILED: alice shows '$a', bob '$b'" >&2; show_transcripts >&2; exit 1; }
holder="${a##* }"
other=$([ "$holder" = alice ] && echo bob || echo alice)

mark "$other"
type_ "$other" release
expect "$other" "! You don't have the spotlight"
mark "$other"
type_ "$holder" release
expect "$other" "  spotlight:    nobody"

# A network change: Reconnecting, then back, the room as it was.
mark bob
type_ bob reconnect
expect bob "[bob] Reconnecting…"
expect bob "[bob] Connected"

mark bob
type_ alice unpin
expect bob "  pinned:       nothing"
mark alice
type_ bob hand down
expect alice "  participants: alice (you), bob"

mark alice
type_ bob quit
expect bob "left the room"
expect alice "  participants: alice (you)"
type_ alice quit
expect alice "left the room"
wait "$alice_pid" "$bob_pid"

show_transcripts
echo
echo "the terminal example worked: each saw the other's pinned message, hand and spotlight"
