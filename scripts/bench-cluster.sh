#!/usr/bin/env bash
# The cluster benchmarks of the scale-out issue (docs/scaling.md), in one command: release
# binaries, services mode on this machine (picture services over one data directory, broadcast
# services listing them all), the load generator of `raster bench`. Writes
# bench-results/cluster/*.json and bench-results/cluster.md.
#
#   scripts/bench-cluster.sh                 # all groups, ~6 minutes after the build
#   scripts/bench-cluster.sh --only relay    # one or more of relay,hot,pictures
#   scripts/bench-cluster.sh --no-build
#
# Groups:
#   relay     W1 N=64 with every client on the picture's sequencer, then every client on a
#             relay (an anchor client makes the other broadcast service the sequencer);
#             alternated twice (A, B, A, B): what a relay adds to p99.
#   hot       one picture, 16 drawers: K viewers on one broadcast service, then 3K viewers
#             over three (the first is the sequencer): the sequencer's CPU per delivered update.
#   pictures  2000 pictures (256x256) x 4 clients over 2 broadcast + 2 picture services,
#             clients taking the broadcast services in turn (each picture: a sequencer and a
#             relay), 0.25 strokes/s each (BENCH_PICTURES_RATE): memory per open picture,
#             delivered updates/s, p99.
#
# Method: servers pinned to core 0 (BENCH_SERVER_CPU), the load generator to core 1
# (BENCH_CLIENT_CPU). Rate limits raised as in scripts/bench.sh. Every group starts a fresh
# cluster. Env: BENCH_DURATION (seconds per run, default 10), BENCH_HOT_VIEWERS (K, default 200).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=1
ONLY=""
while (($#)); do
  case "$1" in
    --no-build) BUILD=0 ;;
    --only) ONLY="$2"; shift ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "bench-cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
want() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

DURATION="${BENCH_DURATION:-10}"
HOT_VIEWERS="${BENCH_HOT_VIEWERS:-200}"
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
CLIENT_CPU="${BENCH_CLIENT_CPU:-1}"
# Every load-generator client comes from 127.0.0.1, and the idle workload puts 2000 on one
# picture: lift the per-address and per-picture limits (PROTOCOL.md §12).
RATE_ARGS=(--rate-ops 1000000 --rate-burst 1000000 --rate-bytes 1000000000
           --max-connections-per-ip 1000000 --max-clients-per-picture 1000000)
BS="$ROOT/target/release/broadcast-service"
PPS="$ROOT/target/release/primary-picture-service"
RASTER="$ROOT/target/release/raster"
OUT="$ROOT/bench-results/cluster"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()

log() { echo "bench-cluster.sh: $*" >&2; }

stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() {
  local deadline=$((SECONDS + 30))
  until curl -fsS "$1/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "$1 not ready after 30 s"; exit 1; }
    sleep 0.1
  done
}

# cluster NAME PPS_COUNT BS_COUNT: starts a fresh cluster; sets PPS_PIDS, BS_URLS, BS_PIDS.
cluster() {
  local name="$1" npps="$2" nbs="$3"
  local data="$WORK/data-$name"
  mkdir -p "$data"
  PPS_PIDS=()
  BS_PIDS=()
  BS_URLS=()
  local urls=()
  for ((i = 0; i < npps; i++)); do
    local port
    port="$(free_port)"
    taskset -c "$SERVER_CPU" "$PPS" --listen "127.0.0.1:$port" --data-dir "$data" \
      >"$WORK/$name.pps$i.log" 2>&1 &
    PIDS+=($!)
    PPS_PIDS+=($!)
    urls+=("ws://127.0.0.1:$port/bs")
    wait_ready "http://127.0.0.1:$port"
  done
  local list
  list="$(IFS=,; echo "${urls[*]}")"
  for ((i = 0; i < nbs; i++)); do
    local port
    port="$(free_port)"
    taskset -c "$SERVER_CPU" "$BS" --listen "127.0.0.1:$port" --pps-url "$list" "${RATE_ARGS[@]}" \
      >"$WORK/$name.bs$i.log" 2>&1 &
    PIDS+=($!)
    BS_PIDS+=($!)
    BS_URLS+=("ws://127.0.0.1:$port")
    wait_ready "http://127.0.0.1:$port"
  done
}

# bench NAME ARGS...: one load-generator run, JSON to $OUT/NAME.json.
bench() {
  local name="$1"
  shift
  log "$name: $* (load: $(uptime | sed 's/.*average: //'))"
  taskset -c "$CLIENT_CPU" "$RASTER" bench --duration "$DURATION" --json "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.log" || log "$name failed (see $OUT/$name.log)"
}

if ((BUILD)); then
  log "building release binaries"
  cargo build --release --workspace --bins --locked
fi
ulimit -n "$(ulimit -Hn)"

if want relay; then
  for round in $(seq 1 "${BENCH_RELAY_ROUNDS:-2}"); do
    cluster "relay$round" 1 2
    pids="${BS_PIDS[0]},${BS_PIDS[1]},${PPS_PIDS[0]}"
    bench "relay-owner-$round" --url "${BS_URLS[0]}" --server-pid "$pids" w1 --clients 64
    bench "relay-relay-$round" --url "${BS_URLS[1]}" --anchor-url "${BS_URLS[0]}" \
      --server-pid "$pids" w1 --clients 64
    stop_all
  done
fi

if want hot; then
  cluster hot1 1 3
  bench hot-one --url "${BS_URLS[0]}" --server-pid "${BS_PIDS[0]},${PPS_PIDS[0]}" \
    w1 --clients "$HOT_VIEWERS" --drawers 16
  stop_all
  cluster hot3 1 3
  all="$(IFS=,; echo "${BS_URLS[*]}")"
  bench hot-three --url "$all" --anchor-url "${BS_URLS[0]}" \
    --server-pid "${BS_PIDS[0]},${BS_PIDS[1]},${BS_PIDS[2]},${PPS_PIDS[0]}" \
    w1 --clients $((3 * HOT_VIEWERS)) --drawers 16
  stop_all
fi

if want pictures; then
  cluster pictures 2 2
  # Memory before any picture is open, to subtract.
  for pid in "${BS_PIDS[@]}" "${PPS_PIDS[@]}"; do
    awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  done >"$OUT/pictures.idle-rss-kib"
  all="$(IFS=,; echo "${BS_URLS[*]}")"
  bench pictures --url "$all" --connect-concurrency 64 \
    --server-pid "${BS_PIDS[0]},${BS_PIDS[1]},${PPS_PIDS[0]},${PPS_PIDS[1]}" \
    --size 256x256 pictures --pictures 2000 --clients 4 --rate "${BENCH_PICTURES_RATE:-0.25}"
  stop_all
fi

python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except Exception:
        return None
lines = ["# Cluster benchmarks (scripts/bench-cluster.sh)", ""]
rows = []
for r in range(1, 10):
    for kind in ("owner", "relay"):
        j = load(f"relay-{kind}-{r}")
        if not j:
            continue
        l = j["latency_ms"]
        cpu = " / ".join(f"{s['cpu_percent']:.0f}" for s in j["servers"])
        rows.append(f"| {r} | clients on the {kind} | {j['delivered_total']} of {j['expected_deliveries']} | "
                    f"{l['p50']:.2f} / {l['p99']:.2f} / {l['max']:.2f} | {cpu} |")
if rows:
    lines += ["## A relay's cost: W1 N=64 (20 strokes/s each), 1 picture service + 2 broadcast services", "",
              "| round | clients | delivered | latency ms p50 / p99 / max | CPU % sequencer / relay / picture service |",
              "|---|---|---|---|---|", *rows, ""]
rows = []
for name, label in (("hot-one", "one broadcast service"), ("hot-three", "three broadcast services")):
    j = load(name)
    if not j:
        continue
    seq = j["servers"][0]
    delivered = max(j["delivered_total"], 1)
    per = seq["cpu_percent"] / 100 * j["duration_s"] / delivered * 1e6
    l = j["latency_ms"]
    cpu = " / ".join(f"{s['cpu_percent']:.0f}" for s in j["servers"])
    rows.append(f"| {label} | {j['clients_per_picture']} | {j['delivered_per_s']:.0f} | "
                f"{l['p50']:.2f} / {l['p99']:.2f} | {cpu} | {per:.2f} |")
if rows:
    lines += ["## A hot picture: 16 drawers (20 strokes/s each), viewers spread over broadcast services", "",
              "| served by | clients | delivered/s | latency ms p50 / p99 | CPU % (sequencer first, picture service last) | sequencer CPU µs per delivered update |",
              "|---|---|---|---|---|---|", *rows, ""]
j = load("pictures")
if j:
    idle = [int(x) for x in (out / "pictures.idle-rss-kib").read_text().split()]
    servers = j["servers"]
    names = ["broadcast service 1", "broadcast service 2", "picture service 1", "picture service 2"]
    l = j["latency_ms"]
    lines += [f"## Many pictures: {j['pictures']} pictures (256x256) x {j['clients_per_picture']} clients ({j['rate_per_client']} strokes/s each), 2 broadcast + 2 picture services", "",
              f"delivered/s {j['delivered_per_s']:.0f} (ideal {j['ideal_delivered_per_s']:.0f}); "
              f"deliveries {j['delivered_total']} of {j['expected_deliveries']}; latency ms p50 {l['p50']:.2f}, "
              f"p99 {l['p99']:.2f}, max {l['max']:.2f}; connect {j['connect_s']:.1f} s", "",
              "| process | CPU % | RSS max MiB | RSS growth MiB | pictures held | growth per picture held KiB |",
              "|---|---|---|---|---|---|"]
    for name, s, base in zip(names, servers, idle):
        growth = s["max_sampled_rss_kib"] - base
        # A broadcast service holds every picture (as sequencer or relay, with its 2 clients
        # there); a picture service the half it owns (rendezvous hashing over two).
        held = j["pictures"] if name.startswith("broadcast") else j["pictures"] / 2
        lines.append(f"| {name} | {s['cpu_percent']:.0f} | {s['max_sampled_rss_kib']/1024:.1f} | {growth/1024:.1f} | "
                     f"{held:.0f} | {growth / held:.1f} |")
    lines.append("")
(out.parent / "cluster.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
