#!/usr/bin/env bash
# The benchmark of issue 5, in one command: builds release binaries, runs every workload against
# a fresh broadcast service (embedded mode) and writes bench-results/results.{json,md}.
#
#   scripts/bench.sh            # default run, ~10 s per workload, < 15 minutes in all
#   scripts/bench.sh --quick    # smoke run, a few seconds per workload (CI-like time)
#
# Options (also as env): --quick (BENCH_QUICK=1), --no-build (BENCH_NO_BUILD=1),
# --no-s3 (BENCH_NO_S3=1: skip the LocalStack cold join), --no-profile (BENCH_NO_PROFILE=1:
# skip perf + flamegraph), --out DIR (BENCH_OUT, default bench-results), --only LIST (BENCH_ONLY:
# comma-separated subset of w1,flush,w2,profile,w3,s3,pictures,idle,pps; keeps the other raw results,
# to rerun some workloads and remake the table).
# Env: BENCH_DURATION (seconds per workload), BENCH_SERVER_CPU / BENCH_CLIENT_CPU (cores for
# taskset, default 0 and 1), BENCH_S3_PORT (LocalStack port, default: a free one; a LocalStack
# already running there is used but never stopped: it is someone else's).
#
# Method: the server runs pinned to one core and the load generator to the other, so each side
# has exactly one core and `--server-pid` CPU shares are shares of that core. Rate limits are
# raised (--rate-ops/--rate-burst 1000000, --rate-bytes 1000000000): W2 must measure the
# service's saturation, not the per-connection limiter (1000 ops/s by default). Every workload
# gets a fresh server and data directory, so peak memory is that workload's own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK="${BENCH_QUICK:-0}"
BUILD=$((1 - ${BENCH_NO_BUILD:-0}))
S3=$((1 - ${BENCH_NO_S3:-0}))
PROFILE=$((1 - ${BENCH_NO_PROFILE:-0}))
OUT="${BENCH_OUT:-bench-results}"
ONLY="${BENCH_ONLY:-}"
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-s3) S3=0 ;;
    --no-profile) PROFILE=0 ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

SERVER_CPU="${BENCH_SERVER_CPU:-0}"
CLIENT_CPU="${BENCH_CLIENT_CPU:-1}"
S3_PORT="${BENCH_S3_PORT:-}"
if ((QUICK)); then
  DURATION="${BENCH_DURATION:-3}"
  W3_STROKES=(2000 10000)
  W2_MAX_WINDOW=16
  IDLE_CLIENTS=500
  PPS_ARGS=(--strokes 20000 --sparse-strokes 2000 --repeats 1)
  REPEATS=2
else
  DURATION="${BENCH_DURATION:-10}"
  W3_STROKES=(10000 100000)
  W2_MAX_WINDOW=64
  IDLE_CLIENTS=2000
  PPS_ARGS=(--strokes 200000 --sparse-strokes 10000 --repeats 5)
  REPEATS=5
fi
# Every load-generator client comes from 127.0.0.1, and the idle workload puts 2000 on one
# picture: lift the per-address and per-picture limits (PROTOCOL.md §12).
RATE_ARGS=(--rate-ops 1000000 --rate-burst 1000000 --rate-bytes 1000000000
           --max-connections-per-ip 1000000 --max-clients-per-picture 1000000)

BS="$ROOT/target/release/broadcast-service"
RASTER="$ROOT/target/release/raster"
PPS_BENCH="$ROOT/target/release/examples/pps_bench"
RAW="$OUT/raw"
# A full run starts from nothing; a partial one replaces only its own workloads' files.
[[ -n "$ONLY" ]] || rm -rf "$RAW"
mkdir -p "$RAW"
WORK="$(mktemp -d)"
SERVER_PID=""
S3_STARTED=0

log() { echo "bench.sh: $*" >&2; }

# want GROUP: whether this run includes that group of workloads.
want() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

cleanup() {
  stop_server
  if ((S3_STARTED)); then scripts/localstack.sh stop "$S3_PORT" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME [extra broadcast-service flags...]: fresh data dir, pinned, waits for /readyz.
start_server() {
  local name="$1"
  shift
  PORT="$(free_port)"
  local data="$WORK/data-$name"
  mkdir -p "$data"
  taskset -c "$SERVER_CPU" "$BS" --listen "127.0.0.1:$PORT" --data-dir "$data" "${RATE_ARGS[@]}" \
    "$@" >"$RAW/$name.server.log" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$RAW/$name.server.log" >&2
      log "server for $name exited"
      exit 1
    fi
    ((SECONDS < deadline)) || { log "server for $name not ready after 30 s"; exit 1; }
    sleep 0.1
  done
}

# run_bench NAME BENCH-ARGS...: the load generator pinned to its core, JSON to raw/NAME.json,
# (BENCH-ARGS start with `raster bench`'s own options, if any, then the workload and its flags)
# its own CPU use (user+sys over wall, whole run incl. connect) to raw/NAME.client.
run_bench() {
  local name="$1"
  shift
  uptime >"$RAW/$name.uptime"
  log "$name: $* (load: $(cut -d, -f3- <"$RAW/$name.uptime" | sed 's/^ *//'))"
  local TIMEFORMAT='%U %S %R'
  # What else ran on the machine mid-run (other people's builds share these two cores).
  (sleep "$(((${DURATION%.*} + 1) / 2 + 1))"; top -b -n1 -w 160 | head -15 >"$RAW/$name.top") &
  { time taskset -c "$CLIENT_CPU" "$RASTER" bench --url "ws://127.0.0.1:$PORT" \
    --duration "$DURATION" --server-pid "$SERVER_PID" --json "$@" \
    >"$RAW/$name.json" 2>"$RAW/$name.log"; } 2>"$RAW/$name.client" ||
    log "$name failed (see $RAW/$name.log); the table says not measured"
}

if ((BUILD)); then
  log "building release binaries"
  cargo build --release --workspace --bins
  cargo build --release -p primary-picture-service --example pps_bench
fi

{
  echo "{"
  echo "  \"date\": \"$(date -u +%FT%TZ)\","
  echo "  \"nproc\": $(nproc),"
  echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\","
  echo "  \"kernel\": \"$(uname -r)\","
  echo "  \"quick\": $QUICK,"
  echo "  \"duration_s\": $DURATION,"
  echo "  \"git\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\""
  echo "}"
} >"$RAW/machine.json"

# W1: N clients on one picture, 8-point strokes at 20/s each.
want w1 && for n in 16 64 256; do
  start_server "w1-$n"
  run_bench "w1-$n" w1 --clients "$n" --rate 20
  stop_server
done

# Flushing vs fan-out: W1 N=64 on a 2048² picture (a flush encodes ~16 MB of pixels), once
# flushing every second and once never (1 h): the p99 difference is what flushing costs the
# fan-out.
if want flush; then
  for flush in 1s 1h; do
    start_server "flush-$flush" --flush-interval "$flush"
    run_bench "flush-$flush" --size 2048x2048 w1 --clients 64 --rate 20
    stop_server
  done
fi

# W2: 64 clients keeping a window of ops in flight; the sweep keeps the best window with
# p99 < 100 ms. Then the best window again under perf for the profile.
if want w2; then
  start_server w2
  run_bench w2 w2 --clients 64 --sweep --max-window "$W2_MAX_WINDOW" --p99-limit-ms 100
  stop_server
fi
if ((PROFILE)) && want profile; then
  best="$(jq -r '(.best.window // .best_window // 4)' "$RAW/w2.json" 2>/dev/null || echo 4)"
  [[ "$best" =~ ^[0-9]+$ ]] || best=4
  start_server w2-profile
  # DWARF unwinding: release builds have no frame pointers, so `-g` alone loses the callers.
  perf record -F 499 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "$SERVER_PID" \
    -- sleep "$((DURATION + 2))" \
    >"$RAW/w2-profile.perf.log" 2>&1 &
  perf_pid=$!
  run_bench w2-profile w2 --clients 64 --window "$best"
  wait "$perf_pid" || true
  stop_server
  if command -v inferno-collapse-perf >/dev/null; then
    perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$WORK/w2.folded"
    inferno-flamegraph --title "broadcast-service under W2 (64 clients, window $best)" \
      --minwidth 0.2 <"$WORK/w2.folded" >"$OUT/w2-flamegraph.svg"
    # Self time of the leaf frames, and inclusive time of every frame: the profile summary.
    python3 - "$WORK/w2.folded" >"$OUT/w2-profile-top.txt" <<'EOF'
import collections, re, sys
own, incl, total = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n); total += n
    frames = stack.split(";")
    own[frames[-1]] += n
    for f in set(frames):
        incl[f] += n
print(f"samples: {total}")
kernel = sum(n for f, n in own.items() if f.endswith("_[k]"))
print(f"kernel (syscalls, TCP, scheduling): {100*kernel/total:.1f}% of the server's samples")
print("top self time:")
for f, n in own.most_common(25):
    print(f"  {100*n/total:5.1f}%  {f[:150]}")
print("inclusive time by module (> 1 %; a sample counts once per module):")
modules = collections.Counter()
pattern = re.compile(r"((?:broadcast_service|primary_picture_service|protocol|tungstenite|tokio_tungstenite|axum)::[A-Za-z_:]*[A-Za-z_])")
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    seen = set()
    for f in stack.split(";"):
        m = pattern.search(f)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            modules[m.group(1)] += int(n)
for f, n in modules.most_common(30):
    if n / total > 0.01:
        print(f"  {100*n/total:5.1f}%  {f}")
EOF
  else
    log "inferno not installed (cargo install inferno): no flamegraph"
  fi
fi

# W3: join time on a 2048² picture with history, warm and cold, filesystem store. The history
# is drawn at 4000 strokes/s, so that drawing lasts longer than the picture service's snapshot
# reuse window (2 s): the warm joins then see the steady state. `w3-burst` draws 10 k strokes
# at 20000/s and joins at once: the worst case, a snapshot older than the whole history.
W3_RATE=4000
if want w3; then
  for strokes in "${W3_STROKES[@]}"; do
    start_server "w3-fs-$strokes"
    run_bench "w3-fs-$strokes" w3 --strokes "$strokes" --side 2048 --repeats "$REPEATS" \
      --draw-rate "$W3_RATE"
    stop_server
  done
  start_server w3-burst
  run_bench w3-burst w3 --strokes "${W3_STROKES[0]}" --side 2048 --repeats "$REPEATS" \
    --draw-rate 20000
  stop_server
  # The same joins asking for PNG snapshots (the contract's `Welcome`; the runs above ask for
  # the LZ4 extension, PROTOCOL.md §8, as the Rust client does by default).
  start_server "w3-png-${W3_STROKES[0]}"
  run_bench "w3-png-${W3_STROKES[0]}" w3 --strokes "${W3_STROKES[0]}" --side 2048 \
    --repeats "$REPEATS" --draw-rate "$W3_RATE" --snapshot png
  stop_server
fi

# W3 cold from S3 (LocalStack), when it can be started here.
if ((S3)) && want s3; then
  S3_PORT="${S3_PORT:-$(free_port)}"
  if scripts/localstack.sh install >"$RAW/localstack.log" 2>&1 &&
    scripts/localstack.sh start "$S3_PORT" >>"$RAW/localstack.log" 2>&1; then
    grep -q "already running" "$RAW/localstack.log" || S3_STARTED=1
    export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_REGION=us-east-1 \
      AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
    for strokes in "${W3_STROKES[@]}"; do
      start_server "w3-s3-$strokes" --store "s3://raster-test/bench-$RANDOM/"
      run_bench "w3-s3-$strokes" w3 --strokes "$strokes" --side 2048 --repeats "$REPEATS" \
        --draw-rate "$W3_RATE"
      stop_server
    done
    if ((S3_STARTED)); then
      scripts/localstack.sh stop "$S3_PORT" >>"$RAW/localstack.log" 2>&1 || true
      S3_STARTED=0
    fi
    unset AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  else
    log "localstack did not start (see $RAW/localstack.log): no S3 cold join"
  fi
fi

# Many pictures: 200 pictures x 8 clients at 20 strokes/s each.
if want pictures; then
  start_server pictures
  run_bench pictures pictures --pictures 200 --clients 8 --rate 20
  stop_server
fi

# Idle clients: one small picture, IDLE_CLIENTS connections that never draw (rate 0). The
# server's largest sampled RSS while they are connected minus its RSS before they came.
if want idle; then
  start_server idle
  sleep 1
  grep VmRSS "/proc/$SERVER_PID/status" | awk '{print $2}' >"$RAW/idle.baseline_kib"
  run_bench idle --size 64x64 pictures --pictures 1 --clients "$IDLE_CLIENTS" --rate 0
  stop_server
fi

# PPS alone, in process, on the load generator's core.
if want pps; then
  uptime >"$RAW/pps.uptime"
  log "pps_bench ${PPS_ARGS[*]}"
  taskset -c "$CLIENT_CPU" "$PPS_BENCH" "${PPS_ARGS[@]}" >"$RAW/pps.json" 2>"$RAW/pps.log" ||
    log "pps_bench failed (see $RAW/pps.log)"
fi

# The table: every target of issue 5 next to today's number.
python3 - "$RAW" "$OUT" <<'EOF'
import json, os, sys

raw, out = sys.argv[1], sys.argv[2]

def load(name):
    try:
        with open(os.path.join(raw, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def text(name):
    try:
        with open(os.path.join(raw, name)) as f:
            return f.read().strip()
    except OSError:
        return None

def client_cpu(name):
    # `time` output: user sys real (whole run: connect, window, drain).
    t = text(name + ".client")
    try:
        user, system, real = (float(v) for v in t.split()[-3:])
        return round(100 * (user + system) / real, 1)
    except (AttributeError, ValueError, ZeroDivisionError):
        return None

def load_avg(name):
    t = text(name + ".uptime")
    # "HH:MM:SS up ..., load average: a, b, c": when the run started, and how busy the machine was.
    return f"at {t.split()[0]}, load {t.split('load average:')[-1].strip()}" if t else None

rows, results = [], {"machine": load("machine.json"), "workloads": {}}

def row(workload, metric, value, target="", met=None, fmt="{:,.1f}"):
    shown = "not measured" if value is None else (fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value))
    verdict = "" if met is None or value is None else ("met" if met else "NOT met")
    rows.append((workload, metric, shown, target, verdict))

for n in (16, 64, 256):
    r = load(f"w1-{n}.json")
    results["workloads"][f"w1-{n}"] = {"report": r, "client_cpu_percent": client_cpu(f"w1-{n}"), "load": load_avg(f"w1-{n}")}
    w = f"W1 N={n}"
    if not r:
        row(w, "run", None); continue
    s = r.get("server") or {}
    all_in = r["delivered_total"] == r["expected_deliveries"] and r["errors"] == 0 and r["resyncs"] == 0
    strict = n == 256
    row(w, "delivered/s (ideal N*N*20)", r["delivered_per_s"], f"{r.get('ideal_delivered_per_s') or 0:,.0f}", None, "{:,.0f}")
    row(w, "delivered / expected", f"{r['delivered_total']:,} / {r['expected_deliveries']:,} (rejected {r['rejected']}, errors {r['errors']}, resyncs {r['resyncs']})",
        "every update" if strict else "", all_in if strict else None)
    row(w, "latency p50 / p99 / max ms", f"{r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} / {r['latency_ms']['max']:.2f}",
        "p99 <= 20 ms" if strict else "", r["latency_ms"]["p99"] <= 20 if strict else None)
    row(w, "server CPU % of a core", s.get("cpu_percent"), "<= 30 %" if strict else "", (s.get("cpu_percent", 1e9) <= 30) if strict else None)
    rss = s.get("peak_rss_kib", 0) / 1024 if s else None
    row(w, "server peak RSS MiB", rss, "<= 60 MB" if strict else "", (rss is not None and rss * 1.048576 <= 60) if strict else None)

for flush in ("1s", "1h"):
    r = load(f"flush-{flush}.json")
    results["workloads"][f"flush-{flush}"] = {"report": r, "load": load_avg(f"flush-{flush}")}
    w = f"W1 N=64, 2048^2, flush every {flush}"
    if not r:
        row(w, "run", None); continue
    s = r.get("server") or {}
    row(w, "latency p50 / p99 / max ms, server CPU %",
        f"{r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} / {r['latency_ms']['max']:.2f}, {s.get('cpu_percent', 0):.0f}",
        "flushing never delays fan-out p99" if flush == "1s" else "")

r = load("w2.json")
results["workloads"]["w2"] = {"report": r, "client_cpu_percent": client_cpu("w2"), "load": load_avg("w2")}
if r:
    best = (r.get("best") or {}).get("delivered_per_s", r.get("best_delivered_per_s"))
    row("W2 N=64", "best delivered/s with p99 < 100 ms", best, ">= 6,000,000/s", best is not None and best >= 6e6, "{:,.0f}")
    row("W2 N=64", "ratio vs Hocuspocus (861 k/s) / bare tungstenite (1.9 M/s)",
        None if best is None else f"{best/861e3:.2f}x / {best/1.9e6:.2f}x")
    for run in r.get("runs", []):
        s = run.get("server") or {}
        row("W2 N=64", f"window {run['window']}: delivered/s, p99 ms, server CPU %",
            f"{run['delivered_per_s']:,.0f}, {run['latency_ms']['p99']:.1f}, {s.get('cpu_percent', 0):.0f}")
    row("W2 N=64", "load generator CPU % (whole sweep, 1 core)", client_cpu("w2"))
else:
    row("W2 N=64", "run", None)
r = load("w2-profile.json")
if r and r.get("runs"):
    results["workloads"]["w2-profile"] = {"report": r, "client_cpu_percent": client_cpu("w2-profile"), "load": load_avg("w2-profile")}
    r = r["runs"][0]
    s = r.get("server") or {}
    row("W2 N=64 (profiled run)", f"window {r['window']}: delivered/s, p99 ms, server CPU %, load generator CPU %",
        f"{r['delivered_per_s']:,.0f}, {r['latency_ms']['p99']:.1f}, {s.get('cpu_percent', 0):.0f}, {client_cpu('w2-profile')}")

targets = {"10000": (20, 40, 150), "100000": (50, 150, 150), "2000": (20, 40, 150)}
for store in ("fs", "s3"):
    names = sorted((f for f in os.listdir(raw) if f.startswith(f"w3-{store}-") and f.endswith(".json")), key=lambda f: int(f.split("-")[2].split(".")[0]))
    if not names and store == "s3":
        row("W3 cold (LocalStack S3)", "join ms", None, "<= 40 / <= 150 ms", None)
    for f in names:
        strokes = f.split("-")[2].split(".")[0]
        r = load(f)
        results["workloads"][f[:-5]] = {"report": r, "load": load_avg(f[:-5])}
        warm_t, cold_t = {"10000": (20, 40), "100000": (50, 150)}.get(strokes, (None, None))
        w = f"W3 {int(strokes)//1000} k strokes, 2048^2"
        if not r:
            row(w, f"{store} run", None); continue
        if store == "fs":
            row(w, "history drawn in s; warm joins' pending updates; their Welcome forms", f"{r['draw_s']:.1f}; {r['warm_pending']}; {', '.join(r.get('warm_forms', []))}")
            ok = warm_t is not None and r["warm"]["p50"] <= warm_t
            row(w, "warm join ms p50 (max)", f"{r['warm']['p50']:.1f} ({r['warm']['max']:.1f})", f"<= {warm_t} ms" if warm_t else "", ok if warm_t else None)
        ok = cold_t is not None and r["cold"]["p50"] <= cold_t
        label = "cold join ms p50 (max), filesystem" if store == "fs" else "cold join ms p50 (max), LocalStack S3"
        row(w, label, f"{r['cold']['p50']:.1f} ({r['cold']['max']:.1f})", f"<= {cold_t} ms" if cold_t else "", ok if cold_t else None)
        if strokes == "100000" and store == "fs":
            row(w, "ratio vs Hocuspocus 100 k (80 ms warm / 360 ms cold)", f"{80/max(r['warm']['p50'],1e-9):.1f}x / {360/max(r['cold']['p50'],1e-9):.1f}x faster")

for f in sorted(f for f in os.listdir(raw) if f.startswith("w3-png-") and f.endswith(".json")):
    r = load(f)
    results["workloads"][f[:-5]] = {"report": r, "load": load_avg(f[:-5])}
    if r:
        row(f"W3 {r['strokes']//1000} k strokes, 2048^2, PNG asked", "warm join ms p50 (max); cold",
            f"{r['warm']['p50']:.1f} ({r['warm']['max']:.1f}); {r['cold']['p50']:.1f} ({r['cold']['max']:.1f})", "(the contract's Welcome; compare)")

r = load("w3-burst.json")
if r:
    results["workloads"]["w3-burst"] = {"report": r, "load": load_avg("w3-burst")}
    row(f"W3 {r['strokes']//1000} k strokes, burst", "warm join ms p50 (max), pending replayed",
        f"{r['warm']['p50']:.1f} ({r['warm']['max']:.1f}), {max(r['warm_pending'] or [0]):,} pending", "(worst case, no target)")

r = load("pictures.json")
results["workloads"]["pictures"] = {"report": r, "client_cpu_percent": client_cpu("pictures"), "load": load_avg("pictures")}
if r:
    s = r.get("server") or {}
    row("200 pictures x 8 clients", "delivered/s (ideal)", f"{r['delivered_per_s']:,.0f} ({r.get('ideal_delivered_per_s') or 0:,.0f})")
    row("200 pictures x 8 clients", "delivered / expected", f"{r['delivered_total']:,} / {r['expected_deliveries']:,} (errors {r['errors']}, resyncs {r['resyncs']})")
    row("200 pictures x 8 clients", "p99 ms, server CPU %, peak RSS MiB",
        f"{r['latency_ms']['p99']:.2f}, {s.get('cpu_percent', 0):.0f}, {s.get('peak_rss_kib', 0)/1024:.0f}")

r = load("idle.json")
base = text("idle.baseline_kib")
results["workloads"]["idle"] = {"report": r, "baseline_rss_kib": base, "load": load_avg("idle")}
if r and base and r.get("server"):
    clients = r["pictures"] * r["clients_per_picture"]
    per = (r["server"]["max_sampled_rss_kib"] - int(base)) * 1024 / clients / 1000
    results["workloads"]["idle"]["bytes_per_client_kb"] = per
    row(f"idle clients ({clients})", "server RSS per idle client, KB", per, "<= 32 KB", per <= 32)
else:
    row("idle clients", "server RSS per idle client, KB", None, "<= 32 KB")

r = load("pps.json")
results["workloads"]["pps"] = {"report": r, "load": load_avg("pps")}
if r:
    px = r["rasterizer"]["covered_pixels_per_s"]
    row("PPS alone", "rasterizer, 8-pt strokes, M covered px/s (1 core)", px / 1e6, ">= 150 M px/s", px >= 150e6)
    row("PPS alone", "apply through Pps (ApplyBatch), M covered px/s", r["apply"]["covered_pixels_per_s"] / 1e6)
    for e in r["encode"]:
        row("PPS alone", f"PNG encode 2048^2 {e['picture']} ms median (max), size", f"{e['median_ms']:.1f} ({e['max_ms']:.1f}), {e['png_bytes']/1e6:.2f} MB",
            "<= 50 ms", e["median_ms"] <= 50)
    for e in r.get("decode", []):
        row("PPS alone", f"PNG decode 2048^2 {e['picture']} ms median (max)", f"{e['median_ms']:.1f} ({e['max_ms']:.1f})")
    for e in r.get("lz4", []):
        row("PPS alone", f"LZ4 snapshot 2048^2 {e['picture']}: encode / decode ms median (max), size",
            f"{e['encode_median_ms']:.1f} ({e['encode_max_ms']:.1f}) / {e['decode_median_ms']:.1f} ({e['decode_max_ms']:.1f}), {e['lz4_bytes']/1e6:.2f} MB")
    for e in r["flush"]:
        row("PPS alone", f"flush 2048^2 {e['picture']} to {r['store'].split(':')[0]} ms median (max)", f"{e['median_ms']:.1f} ({e['max_ms']:.1f})")
else:
    row("PPS alone", "run", None)

with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"rows": [dict(zip(("workload", "metric", "value", "target", "met"), r)) for r in rows], **results}, f, indent=1)
m = results["machine"] or {}
with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"Run {m.get('date')} on {m.get('nproc')} x {m.get('cpu')} (kernel {m.get('kernel')}), commit {m.get('git')}, "
            f"{'quick' if m.get('quick') else 'default'} run, {m.get('duration_s')} s per workload. Server on core 0, load generator on core 1. "
            "`--only` reruns keep the other workloads' earlier results: see the times at the end.\n\n")
    f.write("| workload | metric | value | target | met? |\n|---|---|---|---|---|\n")
    for r in rows:
        f.write("| " + " | ".join(str(c) for c in r) + " |\n")
    f.write("\nWhen each workload ran (UTC) and the load average then (2 cores; other people's builds included):\n\n")
    f.write("".join(f"- {k}: {v['load']}\n" for k, v in results["workloads"].items() if v.get("load")))
print(open(os.path.join(out, "results.md")).read())
EOF
log "wrote $OUT/results.json and $OUT/results.md"
