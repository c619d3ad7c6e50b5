#!/usr/bin/env bash
# Conditional snapshots (PROTOCOL.md §16, BENCHMARKS.md "Conditional snapshot.png"): what
# polling snapshot.png costs the service, conditional (If-None-Match: 304) against
# unconditional (the PNG every time), alternated in one session, release binaries, embedded
# mode. Each run: a fresh service, a picture of SIZE with STROKES random ops kept open by a
# client, `raster bench poll` at RATE polls/s over CONNECTIONS kept-alive connections for
# DURATION seconds; the service's CPU from /proc/PID/stat, per 10,000 polls.
#
#   scripts/bench-poll.sh              # ~2 minutes
#   scripts/bench-poll.sh --no-build
#
# Method: the server pinned to core 0 (BENCH_SERVER_CPU), the load generator to core 1
# (BENCH_CLIENT_CPU). Env: BENCH_DURATION (default 10), BENCH_ROUNDS (default 3),
# BENCH_RATE (conditional polls/s, default 10000), BENCH_UNCONDITIONAL_RATE (default 1000:
# an unconditional poll costs far more, and 10,000/s of them is beyond one core),
# BENCH_SIZE (default 1024x1024), BENCH_STROKES (default 2000), BENCH_CONNECTIONS (default 32).
# Prints one line per run and writes bench-results/poll/*.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=1
while (($#)); do
  case "$1" in
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench-poll.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
RATE="${BENCH_RATE:-10000}"
UNCONDITIONAL_RATE="${BENCH_UNCONDITIONAL_RATE:-1000}"
SIZE="${BENCH_SIZE:-1024x1024}"
STROKES="${BENCH_STROKES:-2000}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
CLIENT_CPU="${BENCH_CLIENT_CPU:-1}"
BS="$ROOT/target/release/broadcast-service"
RASTER="$ROOT/target/release/raster"
OUT="$ROOT/bench-results/poll"
mkdir -p "$OUT"
# WORK, PID, log, stop (at exit too), free_port.
source "$ROOT/scripts/bench-lib.sh"

if ((BUILD)); then
  cargo build --release -p broadcast-service -p raster-client --bins
fi

# run NAME MODE RATE: one measured run on a fresh service.
run() {
  local name="$1" mode="$2" rate="$3"
  local port data
  port="$(free_port)"
  data="$WORK/$name"
  mkdir -p "$data"
  taskset -c "$SERVER_CPU" "$BS" --listen "127.0.0.1:$port" --data-dir "$data" \
    --rate-ops 1000000 --rate-burst 1000000 >"$WORK/$name.server.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "server not ready after 30 s"; exit 1; }
    sleep 0.1
  done
  log "$name (load: $(uptime | sed 's/.*average: //'))"
  taskset -c "$CLIENT_CPU" "$RASTER" --url "ws://127.0.0.1:$port" --threads 1 bench \
    --duration "$DURATION" --size "$SIZE" --server-pid "$PID" --json \
    poll --mode "$mode" --rate "$rate" --connections "$CONNECTIONS" --strokes "$STROKES" \
    >"$OUT/$name.json"
  python3 - "$OUT/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['mode']:>13}: {r['achieved_per_s']:8.0f} polls/s (304: {r['not_modified']}, 200: {r['ok']}, "
      f"errors: {r['errors']}), PNG {r['png_bytes']} B, p50 {r['latency_ms']['p50']:.2f} ms, "
      f"p99 {r['latency_ms']['p99']:.2f} ms; server {r['server_cpu_percent']:.1f}% of a core, "
      f"{r['server_cpu_s_per_10k']:.3f} CPU-s per 10,000 polls")
PY
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  run "conditional-$SIZE-$round" conditional "$RATE"
  run "unconditional-$SIZE-$round" unconditional "$UNCONDITIONAL_RATE"
done
