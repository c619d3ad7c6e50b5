#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (Debian's chromium and
# docker-compose, LocalStack in a venv, the web tests' npm packages), starts LocalStack on a
# free port, runs formatting and lint checks, every Rust test (S3 tests against LocalStack, none
# skipped), every fuzz target for FUZZ_SECONDS (30) each, the offline compose/Dockerfile/k8s
# checks and the browser tests in headless Chromium, and stops everything it started.
#
#   scripts/test.sh            # everything
#   SKIP_LINT=1 scripts/test.sh  # skip fmt/clippy (local iteration only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A one-off build: incremental caches would only cost time and disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

# --- system packages -----------------------------------------------------------------------
need_apt=()
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium chromium-driver)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
# libfuzzer-sys compiles libFuzzer (C++) for scripts/fuzz.sh.
command -v c++ >/dev/null || command -v g++ >/dev/null || need_apt+=(g++)
if ((${#need_apt[@]})); then
  step "installing ${need_apt[*]} (apt)"
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- LocalStack ----------------------------------------------------------------------------
step "LocalStack (S3) on the host"
scripts/localstack.sh install
LS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() { scripts/localstack.sh stop "$LS_PORT" >/dev/null 2>&1 || true; }
trap cleanup EXIT
scripts/localstack.sh start "$LS_PORT"
export S3_TEST_ENDPOINT="http://127.0.0.1:$LS_PORT"
export S3_TEST_BUCKET="raster-test"
export AWS_ACCESS_KEY_ID="test" AWS_SECRET_ACCESS_KEY="test" AWS_REGION="us-east-1"

# --- Rust ----------------------------------------------------------------------------------
if [[ -z "${SKIP_LINT:-}" ]]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  step "cargo deny: licences, duplicate crates, sources (deny.toml)"
  command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2
  cargo deny --locked check licenses bans sources
  step "no import cycles between the files of a crate"
  python3 scripts/check-cycles.py
  step "broadcast service for services mode only: builds without the storage stack"
  # Without its `embedded` feature the broadcast service links the picture service only
  # through the link crate: no store, write-ahead log or S3 client.
  linked="$(cargo tree --locked -p broadcast-service --no-default-features -e normal --prefix none \
    | grep -E '^(primary-picture-service|aws-sdk-s3|aws-config) ' || true)"
  if [[ -n "$linked" ]]; then
    echo "broadcast-service --no-default-features still depends on: $linked" >&2
    exit 1
  fi
  cargo clippy --locked -p broadcast-service --no-default-features -- -D warnings
fi
step "cargo test (workspace)"
cargo build --workspace --bins --locked
cargo test --workspace --locked

# --- fuzzing -------------------------------------------------------------------------------
step "fuzzing (bounded)"
# Every fuzz target for FUZZ_SECONDS each (README "Fuzzing"); a crash fails the suite and
# leaves its input in fuzz/artifacts/<target>/.
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

# --- deployment files ----------------------------------------------------------------------
step "docker-compose, Dockerfiles and Kubernetes manifests (offline checks)"
scripts/check-compose.sh

# --- browser -------------------------------------------------------------------------------
step "browser client: JavaScript vectors and headless Chromium end-to-end"
BS_BIN="$ROOT/target/debug/broadcast-service" web-tests/run.sh

step "all tests passed"
