#!/usr/bin/env bash
# Offline checks of the container and Kubernetes files (no Docker engine needed):
#   1. docker-compose.yml is valid (`docker-compose config -q`, or `docker compose`);
#   2. every PPS_*/BS_*/AWS_* variable set in docker-compose.yml, docker/ and deploy/ is
#      one the Rust sources know (so a renamed flag can't silently fall back to a default);
#   3. Dockerfile COPY sources, compose build contexts/Dockerfiles and bind mounts exist;
#   4. deploy/*.yaml parse as YAML, every document has apiVersion/kind/metadata.name, and
#      kustomization.yaml lists only existing files.
# Outside CI a missing compose tool is skipped with a message; in CI (CI=true) it fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
failures=0
fail() {
  echo "check-compose: FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() { echo "check-compose: ok: $*"; }

# --- 1. compose file -------------------------------------------------------------------
if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  compose=()
fi
if ((${#compose[@]})); then
  if out="$("${compose[@]}" -f docker-compose.yml config -q 2>&1)"; then
    ok "docker-compose.yml is valid (${compose[*]})"
  else
    fail "docker-compose.yml is invalid: $out"
  fi
elif [[ "${CI:-}" == "true" ]]; then
  fail "docker-compose is not installed (CI must install it: apt-get install docker-compose)"
else
  echo "check-compose: SKIP compose validation: neither docker-compose nor 'docker compose' is installed"
fi

# --- 2. env names ----------------------------------------------------------------------
mapfile -t config_files < <(ls docker-compose.yml docker/Dockerfile* deploy/*.yaml 2>/dev/null)
mapfile -t names < <(grep -ohE '\b(PPS|BS|AWS)_[A-Z0-9_]+\b' "${config_files[@]}" | sort -u)
mapfile -t sources < <(find protocol primary-picture-service broadcast-service client \
  -name '*.rs' -not -path '*/target/*' 2>/dev/null)
unknown=()
for name in "${names[@]}"; do
  grep -qw -- "$name" "${sources[@]}" || unknown+=("$name")
done
if ((${#unknown[@]})); then
  fail "env names used in ${config_files[*]} but found in no Rust source: ${unknown[*]}"
else
  ok "${#names[@]} env names all appear in the Rust sources: ${names[*]}"
fi

# --- 3. paths --------------------------------------------------------------------------
before=$failures
for dockerfile in docker/Dockerfile*; do
  [[ "$dockerfile" == *.dockerignore ]] && continue
  # COPY without --from: every source (all words but the last) must exist in the context.
  while read -r line; do
    read -ra words <<<"$line"
    [[ "${words[1]}" == --from=* ]] && continue
    srcs=()
    for word in "${words[@]:1}"; do [[ "$word" == --* ]] || srcs+=("$word"); done
    for src in "${srcs[@]:0:${#srcs[@]}-1}"; do
      [[ -e "$src" ]] || fail "$dockerfile: COPY source '$src' does not exist"
    done
  done < <(grep -E '^\s*(COPY|ADD)\s' "$dockerfile")
  # ARG defaults that look like repository paths must exist too.
  while read -r value; do
    [[ -e "$value" ]] || fail "$dockerfile: ARG default '$value' looks like a path but does not exist"
  done < <(grep -oE '^\s*ARG\s+[A-Za-z_]+=\.?/?[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*$' "$dockerfile" |
    sed -E 's/^\s*ARG\s+[A-Za-z_]+=//' | grep -vE ':' || true)
done
for want in primary-picture-service broadcast-service; do
  grep -qE "^FROM .* AS $want\$" docker/Dockerfile || fail "docker/Dockerfile has no target '$want'"
done
while read -r path; do
  [[ -e "$path" ]] || fail "docker-compose.yml: build path '$path' does not exist"
done < <(grep -E '^\s+(context|dockerfile):' docker-compose.yml | awk '{print $2}' | sort -u)
while read -r mount; do
  [[ -e "$mount" ]] || fail "docker-compose.yml: bind mount source '$mount' does not exist"
done < <(grep -oE '^\s+- \./[^:]+:' docker-compose.yml | sed -E 's/^\s+- //; s/:$//')
for hook in docker/localstack-init/ready.d/*.sh; do
  [[ -x "$hook" ]] || fail "$hook is not executable (LocalStack skips it)"
  bash -n "$hook" || fail "$hook has a syntax error"
done
((failures == before)) && ok "dockerfile COPY sources, compose build paths, bind mounts and hooks exist"

# --- 4. Kubernetes YAML ----------------------------------------------------------------
python=""
for candidate in python3 "$ROOT/.localstack-venv/bin/python"; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [[ -z "$python" ]]; then
  fail "no python with PyYAML (apt-get install python3-yaml, or scripts/localstack.sh install)"
elif ! "$python" - deploy <<'PY'; then
import os, sys, yaml
root = sys.argv[1]
bad = 0
for name in sorted(os.listdir(root)):
    if not name.endswith(".yaml"):
        continue
    path = os.path.join(root, name)
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as err:
        print(f"check-compose: FAIL: {path}: {err}", file=sys.stderr)
        bad += 1
        continue
    for doc in docs:
        if name == "kustomization.yaml":
            for res in doc.get("resources", []):
                if not os.path.exists(os.path.join(root, res)):
                    print(f"check-compose: FAIL: {path}: resource {res} does not exist", file=sys.stderr)
                    bad += 1
            continue
        missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
        if not (doc.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            print(f"check-compose: FAIL: {path}: a document lacks {', '.join(missing)}", file=sys.stderr)
            bad += 1
    print(f"check-compose: ok: {path}: {len(docs)} document(s)")
sys.exit(1 if bad else 0)
PY
  fail "deploy/*.yaml"
fi

if ((failures)); then
  echo "check-compose: $failures check(s) failed" >&2
  exit 1
fi
echo "check-compose: all checks passed"
