#!/usr/bin/env bash
# A/B of two broadcast-service binaries (a refactor against the build before it), alternating
# A, B, A, B... in one session so that the machine's drift (±20-30 % here from one minute to the
# next) falls on both alike. Each round starts a fresh embedded service (own data dir, pinned to
# core 0; the load generator, always the same `raster`, on core 1) and runs:
#   - W2: 64 clients drawing at window 32 for BENCH_DURATION seconds (delivered updates/s, p99);
#   - W3: warm joins of a 2048² picture with 10,000 strokes (p50 of 5, ms).
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     # default 3 rounds
# Env: BENCH_DURATION (s, default 10), RASTER (default target/release/raster).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bench-lib.sh"

OLD="${1:?old broadcast-service binary}"
NEW="${2:?new broadcast-service binary}"
ROUNDS="${3:-3}"
DURATION="${BENCH_DURATION:-10}"
RASTER="${RASTER:-$ROOT/target/release/raster}"

# known_flags BINARY: the RATE_ARGS this binary has (an older build may lack some limits, and
# then has no such limit to lift).
known_flags() {
  local help i
  help="$("$1" --help)"
  KNOWN=()
  for ((i = 0; i < ${#RATE_ARGS[@]}; i += 2)); do
    if grep -q -- "${RATE_ARGS[i]} " <<<"$help"; then
      KNOWN+=("${RATE_ARGS[i]}" "${RATE_ARGS[i + 1]}")
    fi
  done
}

# run LABEL BINARY: one round of both workloads; prints one line.
run() {
  local label="$1" binary="$2" port data
  port="$(free_port)"
  data="$WORK/data-$label-$RANDOM"
  mkdir -p "$data"
  known_flags "$binary"
  taskset -c 0 "$binary" --listen "127.0.0.1:$port" --data-dir "$data" "${KNOWN[@]}" \
    >"$WORK/$label.server.log" 2>&1 &
  PID=$!
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.1; done
  taskset -c 1 "$RASTER" bench --url "ws://127.0.0.1:$port" --duration "$DURATION" --json \
    w2 --clients 64 --window 32 >"$WORK/w2.json" 2>"$WORK/w2.log"
  taskset -c 1 "$RASTER" bench --url "ws://127.0.0.1:$port" --json \
    w3 --strokes 10000 --side 2048 --repeats 5 --draw-rate 4000 >"$WORK/w3.json" 2>"$WORK/w3.log"
  stop
  python3 - "$label" "$WORK/w2.json" "$WORK/w3.json" "$(cut -d, -f3- /proc/loadavg 2>/dev/null || uptime)" <<'PY'
import json, sys
label, w2, w3, load = sys.argv[1:5]
w2 = json.load(open(w2))
run = (w2.get("runs") or [w2])[0]
w3 = json.load(open(w3))
print(f"{label}: W2 {run['delivered_per_s'] / 1e6:.2f} M/s (p99 {run['latency_ms']['p99']:.1f} ms), "
      f"W3 warm join p50 {w3['warm']['p50']:.1f} ms, cold p50 {w3['cold']['p50']:.1f} ms")
PY
}

log "A = $OLD, B = $NEW, $ROUNDS rounds of W2 ($DURATION s) and W3, alternating"
for ((i = 1; i <= ROUNDS; i++)); do
  run "A$i" "$OLD"
  run "B$i" "$NEW"
done
