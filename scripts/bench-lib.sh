# Sourced by the single-server benchmark scripts (bench-poll.sh, bench-wal.sh): a scratch
# directory, one server process stopped at exit, logging with the script's name, free ports,
# the limits lifted for load (RATE_ARGS).
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

# The load generator's clients all come from 127.0.0.1 and some workloads put thousands on one
# picture: lift the per-connection rate limits and the per-address and per-picture limits
# (PROTOCOL.md §12), so the benchmarks measure the service, not its limiters.
RATE_ARGS=(--rate-ops 1000000 --rate-burst 1000000 --rate-bytes 1000000000
           --max-connections-per-ip 1000000 --max-clients-per-picture 1000000)
