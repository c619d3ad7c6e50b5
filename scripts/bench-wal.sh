#!/usr/bin/env bash
# The write-ahead log's cost (docs/durability.md), in one command: W1 (N clients on one
# picture, 20 strokes/s each) against the embedded service with the log on and off, alternated
# in one session (on, off, on, off, ...), release binaries. Writes bench-results/wal/*.json and
# bench-results/wal.md.
#
#   scripts/bench-wal.sh              # N=64 and N=256, 3 rounds of 10 s each: ~3 minutes
#   scripts/bench-wal.sh --no-build
#
# Method: the server pinned to core 0 (BENCH_SERVER_CPU), the load generator to core 1
# (BENCH_CLIENT_CPU); rate limits raised as in scripts/bench.sh; a fresh data directory per
# run. Env: BENCH_DURATION (seconds per run, default 10), BENCH_ROUNDS (default 3),
# BENCH_CLIENTS (default "64 256").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=1
while (($#)); do
  case "$1" in
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-wal.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
CLIENTS="${BENCH_CLIENTS:-64 256}"
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
CLIENT_CPU="${BENCH_CLIENT_CPU:-1}"
RATE_ARGS=(--rate-ops 1000000 --rate-burst 1000000 --rate-bytes 1000000000)
BS="$ROOT/target/release/broadcast-service"
RASTER="$ROOT/target/release/raster"
OUT="$ROOT/bench-results/wal"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PID=""

log() { echo "bench-wal.sh: $*" >&2; }
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

# run NAME WAL N: the embedded service with --wal WAL, W1 with N clients.
run() {
  local name="$1" wal="$2" n="$3"
  local port data
  port="$(free_port)"
  data="$WORK/$name"
  mkdir -p "$data"
  taskset -c "$SERVER_CPU" "$BS" --listen "127.0.0.1:$port" --data-dir "$data" --wal "$wal" \
    "${RATE_ARGS[@]}" >"$WORK/$name.server.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "server not ready after 30 s"; exit 1; }
    sleep 0.1
  done
  log "$name (load: $(uptime | sed 's/.*average: //'))"
  taskset -c "$CLIENT_CPU" "$RASTER" bench --url "ws://127.0.0.1:$port" --duration "$DURATION" \
    --server-pid "$PID" --json w1 --clients "$n" >"$OUT/$name.json" 2>"$OUT/$name.log" ||
    log "$name failed (see $OUT/$name.log)"
  stop
  rm -rf "$data"
}

if ((BUILD)); then
  log "building release binaries"
  cargo build --release --workspace --bins --locked
fi
ulimit -n "$(ulimit -Hn)"

for round in $(seq 1 "$ROUNDS"); do
  for n in $CLIENTS; do
    run "w1-$n-on-$round" on "$n"
    run "w1-$n-off-$round" off "$n"
  done
done

python3 - "$OUT" "$ROUNDS" "$CLIENTS" <<'PY'
import json, statistics, sys
from pathlib import Path
out, rounds, clients = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split()
lines = ["# The write-ahead log's cost (scripts/bench-wal.sh)", "",
         "W1: N clients on one picture, 20 strokes/s each, embedded mode; runs alternated log on / off.", "",
         "| N | round | log | delivered | latency ms p50 / p99 / max | server CPU % |",
         "|---|---|---|---|---|---|"]
summary = []
for n in clients:
    p99 = {"on": [], "off": []}
    cpu = {"on": [], "off": []}
    for r in range(1, rounds + 1):
        for wal in ("on", "off"):
            try:
                j = json.loads((out / f"w1-{n}-{wal}-{r}.json").read_text())
            except Exception:
                continue
            l, s = j["latency_ms"], j["server"]
            p99[wal].append(l["p99"])
            cpu[wal].append(s["cpu_percent"])
            lines.append(f"| {n} | {r} | {wal} | {j['delivered_total']} of {j['expected_deliveries']} | "
                         f"{l['p50']:.2f} / {l['p99']:.2f} / {l['max']:.2f} | {s['cpu_percent']:.1f} |")
    if p99["on"] and p99["off"]:
        m = {k: statistics.median(v) for k, v in p99.items()}
        c = {k: statistics.median(v) for k, v in cpu.items()}
        summary.append(f"| {n} | {m['on']:.2f} | {m['off']:.2f} | {m['on'] - m['off']:+.2f} | "
                       f"{c['on']:.1f} | {c['off']:.1f} | {c['on'] / c['off']:.2f} |")
lines += ["", "Medians over the rounds:", "",
          "| N | p99 on (ms) | p99 off (ms) | log adds (ms) | CPU % on | CPU % off | CPU ratio on/off |",
          "|---|---|---|---|---|---|---|", *summary, ""]
(out.parent / "wal.md").write_text("\n".join(lines))
print("\n".join(lines))
PY
