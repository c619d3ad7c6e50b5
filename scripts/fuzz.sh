#!/usr/bin/env bash
# Coverage-guided fuzzing of the client frame decoder, op validation and the rasterizer
# (README "Fuzzing"): builds the fuzz crate (fuzz/, libFuzzer through libfuzzer-sys, on stable
# Rust: the instrumentation flags cargo-fuzz passes, without its nightly-only sanitizer) and runs
# every target for SECONDS each.
#
#   scripts/fuzz.sh                       # every target, 60 s each
#   scripts/fuzz.sh 600 op_apply          # one target, 10 minutes
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/, read only) and from what
# earlier runs here found (fuzz/work/<target>/, not committed). A crash, a panic, an input
# slower than FUZZ_TIMEOUT seconds or a run over FUZZ_RSS_MB of memory stops that target; the
# input is written to fuzz/artifacts/<target>/ (the output names the file) and the script
# exits non-zero after trying the other targets. Replay one input with
#   fuzz/target/<host>/release/<target> fuzz/artifacts/<target>/crash-...
# fuzz/Cargo.lock pins the fuzz build; not `--locked`, so that a dependency added to the
# protocol crate is added there too (commit the lock file then) instead of failing the build.
# Limits, all overridable from the environment: FUZZ_TIMEOUT (10 s per input), FUZZ_RSS_MB
# (1024), FUZZ_MAX_LEN (per target below: the largest input tried).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

SECONDS_EACH="${1:-60}"
shift || true
if (($#)); then
  TARGETS=("$@")
else
  TARGETS=()
  for f in fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-1024}"

# Frames up to 16 KiB reach every message shape with room for many points; op_apply's inputs
# are one op each, and its naive reference is quadratic-ish, so they stay smaller.
max_len() {
  if [[ -n "${FUZZ_MAX_LEN:-}" ]]; then echo "$FUZZ_MAX_LEN"; return; fi
  case "$1" in
    op_apply) echo 4096 ;;
    *) echo 16384 ;;
  esac
}

# libfuzzer-sys compiles libFuzzer (C++) in its build script.
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: a C++ compiler is needed (apt-get install g++)" >&2
  exit 2
fi

# SanitizerCoverage as cargo-fuzz sets it up: 8-bit edge counters and their PC table (what
# libFuzzer's coverage feedback reads), comparison tracing (guides it through magic values
# such as enum tags and lengths) and stack depth. `--target` keeps these flags off build
# scripts and proc macros, which are not linked with libFuzzer.
HOST="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth"
cargo build --release --target "$HOST" --target-dir "$ROOT/fuzz/target" \
  $(printf -- '--bin %s ' "${TARGETS[@]}")

failed=()
for target in "${TARGETS[@]}"; do
  bin="$ROOT/fuzz/target/$HOST/release/$target"
  work="$ROOT/fuzz/work/$target"
  artifacts="$ROOT/fuzz/artifacts/$target"
  log="$ROOT/fuzz/work/$target.log"
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $target for ${SECONDS_EACH}s (max_len $(max_len "$target"), log $log)"
  if "$bin" -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -malloc_limit_mb="$RSS_MB" -max_len="$(max_len "$target")" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" "$ROOT/fuzz/corpus/$target" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" |
      sed "s/^/  $target: /"
  else
    echo "fuzz: $target FAILED; the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    grep -h 'Test unit written to' "$log" >&2 || true
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: failing targets: ${failed[*]} (inputs in fuzz/artifacts/<target>/; README \"Fuzzing\" says how to keep one as a regression test)" >&2
  exit 1
fi
echo "fuzz: no crash in ${TARGETS[*]}"
