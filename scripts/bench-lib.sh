# Sourced by the single-server benchmark scripts (bench-poll.sh, bench-wal.sh): a scratch
# directory, one server process stopped at exit, logging with the script's name, free ports.
#   source "$ROOT/scripts/bench-lib.sh"

WORK="$(mktemp -d)"
PID=""
BENCH_NAME="$(basename "$0")"

log() { echo "$BENCH_NAME: $*" >&2; }

# Stops the server started in PID, if any.
stop() {
  if [[ -n "$PID" ]]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
  fi
}
trap 'stop; rm -rf "$WORK"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
