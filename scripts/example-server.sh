#!/usr/bin/env bash
# Starts a roomstate server for the example apps and prints what two devices need: the
# server's address as each device sees it, and an access token for each (alice, bob).
# The server runs in the foreground with the --dev keys (devkey/secret); Ctrl-C stops it.
#
#   scripts/example-server.sh              room "example", port 7880
#   ROOM=class-7 PORT=7881 scripts/example-server.sh
#   scripts/example-server.sh --tokens-only   print the tokens and exit (server running)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
room="${ROOM:-example}"
port="${PORT:-7880}"
profile="${ROOMSTATE_EXAMPLE_PROFILE:-release}"
if [ "$profile" = debug ]; then
  cargo build -q -p roomstate-server --bin roomstate
  bin="$(target_dir)/debug/roomstate"
else
  cargo build -q --release -p roomstate-server --bin roomstate
  bin="$(target_dir)/release/roomstate"
fi

tokens() {
  for identity in alice bob; do
    token=$("$bin" token create --api-key devkey --api-secret secret --room "$room" \
      --identity "$identity" --name "${identity^}" --can-update-metadata --valid-for 24h)
    printf '  %-6s %s\n' "$identity" "$token"
  done
}

lan_ip=$(hostname -I 2>/dev/null | awk '{print $1}')
[ -n "$lan_ip" ] || lan_ip=$(ipconfig getifaddr en0 2>/dev/null || echo "<this machine's LAN address>")
cat <<INFO
Server addresses, as each device sees this machine:
  iOS simulator, terminal example   ws://127.0.0.1:$port
  Android emulator                  ws://10.0.2.2:$port
  a phone on the same Wi-Fi         ws://$lan_ip:$port
Tokens for room "$room" (valid 24 h; paste one per device):
$(tokens)
INFO
[ "${1:-}" = "--tokens-only" ] && exit 0
echo "Starting the server (Ctrl-C stops it)..."
exec "$bin" serve --dev --bind "0.0.0.0:$port"
