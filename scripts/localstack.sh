#!/usr/bin/env bash
# LocalStack (S3 only) on the host, for the S3 store tests. No Docker engine needed.
#
#   scripts/localstack.sh install        # idempotent: venv at .localstack-venv with pinned versions
#   scripts/localstack.sh start PORT     # background, data under target/localstack-PORT, waits for
#                                        # health, creates the bucket "raster-test"
#   scripts/localstack.sh stop PORT      # stops the one started by `start PORT`
#
# Logs go to target/localstack-PORT.log (printed when start fails); the pid to
# target/localstack-PORT.pid. Env: LOCALSTACK_START_TIMEOUT (seconds, default 120),
# LOCALSTACK_BUCKET (default raster-test).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.localstack-venv"
PY="$VENV/bin/python"
TARGET="$ROOT/target"
BUCKET="${LOCALSTACK_BUCKET:-raster-test}"
START_TIMEOUT="${LOCALSTACK_START_TIMEOUT:-120}"
# Pinned together: newer cryptography/pyopenssl break localstack-core 4.9.2's TLS helpers.
PACKAGES=(
  "localstack-core[runtime]==4.9.2"
  "cbor2==5.6.5"
  "pyopenssl==24.2.1"
  "cryptography==43.0.3"
  "service_identity==24.1.0"
)

die() {
  echo "localstack.sh: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 install | start PORT | stop PORT" >&2
  exit 2
}

check_port() {
  if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
    die "PORT must be a number in 1..65535, got '${1:-}'"
  fi
}

install() {
  if [[ -x "$PY" ]] && "$PY" - "${PACKAGES[@]}" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    name = name.split("[")[0]
    if version(name) != want:
        sys.exit(1)
import localstack, boto3  # noqa: F401
EOF
    echo "localstack.sh: $VENV already has the pinned packages"
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
  python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  "$PY" -c 'import localstack, boto3' || die "install finished but localstack does not import"
  echo "localstack.sh: installed into $VENV"
}

healthy() {
  # S3 must report "running" or "available"; the gateway answers before S3 is ready.
  curl -fsS --max-time 2 "http://127.0.0.1:$1/_localstack/health" 2>/dev/null |
    grep -Eq '"s3": *"(running|available)"'
}

start() {
  local port="$1" pidfile="$TARGET/localstack-$1.pid" log="$TARGET/localstack-$1.log"
  local data="$TARGET/localstack-$1"
  [[ -x "$PY" ]] || die "no venv at $VENV: run '$0 install' first"
  command -v curl >/dev/null || die "curl is missing"
  mkdir -p "$TARGET" "$data"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    if healthy "$port"; then
      echo "localstack.sh: already running on port $port (pid $(cat "$pidfile"))"
      create_bucket "$port"
      return 0
    fi
    die "pid $(cat "$pidfile") from $pidfile is alive but not healthy; run '$0 stop $port' first"
  fi
  if curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
    die "something else already listens on 127.0.0.1:$port"
  fi

  # setsid: its own process group, so `stop` ends LocalStack and its children and nothing else.
  (
    cd "$data"
    SERVICES=s3 \
      GATEWAY_LISTEN="127.0.0.1:$port" \
      LOCALSTACK_HOST="127.0.0.1:$port" \
      DATA_DIR="$data/state" \
      FILESYSTEM_ROOT="$data/fs" \
      LOCALSTACK_VOLUME_DIR="$data/volume" \
      DISABLE_EVENTS=1 \
      SKIP_SSL_CERT_DOWNLOAD=1 \
      PERSISTENCE=0 \
      exec setsid "$PY" -m localstack.runtime.main
  ) >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"

  local deadline=$((SECONDS + START_TIMEOUT))
  until healthy "$port"; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "localstack.sh: localstack exited during startup; log $log:" >&2
      cat "$log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "localstack.sh: not healthy after ${START_TIMEOUT}s; log $log:" >&2
      cat "$log" >&2
      stop "$port"
      exit 1
    fi
    sleep 0.5
  done
  create_bucket "$port"
  echo "localstack.sh: running on http://127.0.0.1:$port (pid $(cat "$pidfile"), bucket $BUCKET)"
}

create_bucket() {
  local port="$1" code
  # PUT on an existing bucket owned by us answers 200 on LocalStack (us-east-1 semantics).
  code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$port/$BUCKET")" ||
    die "creating bucket $BUCKET failed: no answer from 127.0.0.1:$port"
  case "$code" in
    200 | 409) ;;
    *) die "creating bucket $BUCKET answered HTTP $code" ;;
  esac
}

stop() {
  local port="$1" pidfile="$TARGET/localstack-$1.pid" pid
  if [[ ! -f "$pidfile" ]]; then
    echo "localstack.sh: nothing to stop on port $port (no $pidfile)"
    return 0
  fi
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    # The process group led by $pid (see setsid in start).
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "localstack.sh: pid $pid ignored SIGTERM for 20s; sending SIGKILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
  echo "localstack.sh: stopped (port $port)"
}

case "${1:-}" in
  install) install ;;
  start)
    check_port "${2:-}"
    start "$2"
    ;;
  stop)
    check_port "${2:-}"
    stop "$2"
    ;;
  *) usage ;;
esac
