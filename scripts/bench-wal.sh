#!/usr/bin/env bash
# The durability benchmarks of BENCHMARKS.md "Write-ahead log" (docs/durability.md), in one
# command, release binaries, embedded mode:
#   1. W1 (N clients on one picture, 20 strokes/s each) with the log on and off, alternated in
#      one session (on, off, on, off, ...): p50/p99 latency and server CPU;
#   2. echo to durable: 4 clients at 20 ops/s with ?durable=1, the default --flush-interval
#      (5 s), on S3 when BENCH_S3_ENDPOINT is set (LocalStack: scripts/localstack.sh start PORT,
#      bucket raster-test), else the filesystem store;
#   3. resume (?since=) against a full join on a 2048x2048 picture with 1000 strokes, 100
#      updates missed each time: Welcome bytes and milliseconds.
# Writes bench-results/wal/*.json and bench-results/wal.md.
#
#   scripts/bench-wal.sh              # ~6 minutes
#   scripts/bench-wal.sh --no-build
#
# Method: the server pinned to core 0 (BENCH_SERVER_CPU), the load generator to core 1
# (BENCH_CLIENT_CPU); rate limits raised as in scripts/bench.sh; a fresh data directory per
# run. Env: BENCH_DURATION (seconds per W1 run, default 10), BENCH_ROUNDS (default 3),
# BENCH_CLIENTS (default "64 256"), BENCH_DURABLE_DURATION (default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=1
while (($#)); do
  case "$1" in
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench-wal.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
CLIENTS="${BENCH_CLIENTS:-64 256}"
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
CLIENT_CPU="${BENCH_CLIENT_CPU:-1}"
BS="$ROOT/target/release/broadcast-service"
RASTER="$ROOT/target/release/raster"
OUT="$ROOT/bench-results/wal"
mkdir -p "$OUT"
# WORK, PID, log, stop (at exit too), free_port, RATE_ARGS.
source "$ROOT/scripts/bench-lib.sh"

# serve NAME ARGS...: the embedded service on a free port ($PORT), a fresh data directory.
serve() {
  local name="$1"
  shift
  PORT="$(free_port)"
  DATA="$WORK/$name"
  mkdir -p "$DATA"
  taskset -c "$SERVER_CPU" "$BS" --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    "${RATE_ARGS[@]}" "$@" >"$WORK/$name.server.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "server not ready after 30 s"; exit 1; }
    sleep 0.1
  done
  log "$name (load: $(uptime | sed 's/.*average: //'))"
}

# bench NAME ARGS...: the load generator against $PORT, JSON to $OUT/NAME.json.
bench() {
  local name="$1"
  shift
  taskset -c "$CLIENT_CPU" "$RASTER" bench --url "ws://127.0.0.1:$PORT" --server-pid "$PID" \
    --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" || log "$name failed (see $OUT/$name.log)"
  stop
  rm -rf "$DATA"
}

# run NAME WAL N: the embedded service with --wal WAL, W1 with N clients.
run() {
  serve "$1" --wal "$2"
  bench "$1" --duration "$DURATION" w1 --clients "$3"
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

STORE_ARGS=()
if [[ -n "${BENCH_S3_ENDPOINT:-}" ]]; then
  export AWS_ENDPOINT_URL="$BENCH_S3_ENDPOINT" AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
  STORE_ARGS=(--store "s3://raster-test/bench-durable-$$/")
fi
serve durable "${STORE_ARGS[@]}"
bench durable --duration "${BENCH_DURABLE_DURATION:-60}" --drain 15 --size 512x512 durable --clients 4
serve resume
bench resume resume --side 2048 --strokes 1000 --gap 100 --repeats 5

python3 - "$OUT" "$ROUNDS" "$CLIENTS" "${BENCH_S3_ENDPOINT:+S3 (LocalStack)}" <<'PY'
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
store = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else "filesystem"
try:
    d = json.loads((out / "durable.json").read_text())
    l = d["echo_to_durable_ms"]
    lines += [f"Echo to durable ({store} store, default --flush-interval 5s): {d['clients']} clients at "
              f"{d['rate']:.0f} ops/s for {d['duration_s']:.0f} s, {d['durable']} of {d['echoed']} echoed ops "
              f"made durable: p50 {l['p50'] / 1000:.2f} s, p99 {l['p99'] / 1000:.2f} s, max {l['max'] / 1000:.2f} s.", ""]
except Exception as e:
    lines += [f"Echo to durable: no result ({e})", ""]
try:
    r = json.loads((out / "resume.json").read_text())
    med = lambda v: statistics.median(v)
    lines += [f"Resume against a full join, {r['side']}x{r['side']} with {r['strokes']} strokes, {r['gap']} updates "
              f"missed, {r['repeats']} rounds (medians; every resume kept its picture: {r['resumes_kept_picture']}):", "",
              "| join | Welcome bytes | ms until the picture is ready |", "|---|---|---|",
              f"| resume (`?since=`) | {r['welcome_bytes_resume']} | {med(r['resume_ms']):.1f} |",
              f"| full, LZ4 | {r['welcome_bytes_full_lz4']} | {med(r['full_lz4_ms']):.1f} |",
              f"| full, PNG | {r['welcome_bytes_full_png']} | {med(r['full_png_ms']):.1f} |", ""]
except Exception as e:
    lines += [f"Resume: no result ({e})", ""]
(out.parent / "wal.md").write_text("\n".join(lines))
print("\n".join(lines))
PY
