#!/usr/bin/env bash
# Offline checks of the container and Kubernetes files (no Docker engine needed):
#   1. docker-compose.yml is valid (`docker-compose config -q`, or `docker compose`);
#   2. every PPS_*/BS_*/AWS_* variable set in docker-compose.yml, docker/ and deploy/ is
#      one the Rust sources know (so a renamed flag can't silently fall back to a default);
#   3. Dockerfile COPY sources, compose build contexts/Dockerfiles and bind mounts exist;
#   4. deploy/*.yaml parse as YAML, every document has apiVersion/kind/metadata.name, and
#      kustomization.yaml lists exactly the manifests there (and builds, if kubectl is here);
#   5. the compose cluster is wired as docs/scaling.md needs: every BS_PPS_URL entry is a
#      picture service's PPS_ADVERTISE_URL, character for character, every picture service is
#      listed, every broadcast service lists the same ones, gets no PPS_* variable (services
#      mode refuses them) and advertises its own address, the
#      front proxy balances over exactly the broadcast services; start order and health checks;
#   6. so is deploy/: BS_PPS_URL lists one entry per StatefulSet replica, each exactly what that
#      replica advertises (PPS_ADVERTISE_URL from its stable name); BS advertise their pod IP
#      and get no PPS_* variable;
#      PDBs take one pod at a time; grace periods cover the drain deadlines; probes; the
#      Gateway routes every public endpoint and not the internal relay link, and its
#      references (Gateway, Service, policy targets) resolve.
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
# Every workspace member is copied into the build (a missing one fails only inside Docker).
while read -r member; do
  grep -qE "^COPY $member \./$member\$" docker/Dockerfile ||
    fail "docker/Dockerfile does not COPY workspace member '$member'"
done < <(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("Cargo.toml","rb"))["workspace"]["members"]))')
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
            listed = doc.get("resources", [])
            for res in listed:
                if not os.path.exists(os.path.join(root, res)):
                    print(f"check-compose: FAIL: {path}: resource {res} does not exist", file=sys.stderr)
                    bad += 1
            for other in sorted(os.listdir(root)):
                if other.endswith(".yaml") and other != name and other not in listed:
                    print(f"check-compose: FAIL: {path}: {other} is in deploy/ but not in resources", file=sys.stderr)
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

if command -v kubectl >/dev/null 2>&1; then
  # `kubectl kustomize` builds offline (no cluster): it catches what kustomize itself rejects.
  if out="$(kubectl kustomize deploy 2>&1 >/dev/null)"; then
    ok "kubectl kustomize deploy builds"
  else
    fail "kubectl kustomize deploy: $out"
  fi
else
  echo "check-compose: SKIP kustomize build: kubectl is not installed (the YAML checks above still ran)"
fi

# --- 5. the compose cluster's wiring ---------------------------------------------------------
if [[ -n "$python" ]] && ! "$python" - docker-compose.yml docker/proxy.conf <<'PY'; then
import re, sys, yaml
from urllib.parse import urlsplit

compose_path, proxy_path = sys.argv[1], sys.argv[2]
services = yaml.safe_load(open(compose_path))["services"]
bad = []

def env(svc):
    e = svc.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) if "=" in item else (item, "") for item in e)
    return {k: str(v) for k, v in e.items()}

def listen_port(value):
    return int(value.rsplit(":", 1)[1])

def kind(svc):
    """'pps', 'bs' or None, from the image or the build target."""
    build = svc.get("build") if isinstance(svc.get("build"), dict) else {}
    text = f"{svc.get('image', '')} {build.get('target', '')}"
    if "primary-picture-service" in text:
        return "pps"
    if "broadcast-service" in text:
        return "bs"
    return None

pps = {n: s for n, s in services.items() if kind(s) == "pps"}
bs = {n: s for n, s in services.items() if kind(s) == "bs"}
if len(pps) < 2 or len(bs) < 2:
    bad.append(f"expected at least two picture services and two broadcast services, found {sorted(pps)} and {sorted(bs)}")

advertised = {}
for name, svc in pps.items():
    e = env(svc)
    url = e.get("PPS_ADVERTISE_URL")
    if not url:
        bad.append(f"{name}: no PPS_ADVERTISE_URL (the default, ws://127.0.0.1:PORT/bs, is wrong in a container)")
        continue
    u = urlsplit(url)
    if u.scheme != "ws" or u.hostname != name or u.path != "/bs":
        bad.append(f"{name}: PPS_ADVERTISE_URL {url} is not ws://{name}:PORT/bs")
    if "PPS_LISTEN" in e and u.port != listen_port(e["PPS_LISTEN"]):
        bad.append(f"{name}: PPS_ADVERTISE_URL port {u.port} is not the PPS_LISTEN port {e['PPS_LISTEN']}")
    if url in advertised.values():
        bad.append(f"{name}: PPS_ADVERTISE_URL {url} is also another picture service's")
    advertised[name] = url

lists = {}
bs_addresses = {}
for name, svc in bs.items():
    e = env(svc)
    raw = e.get("BS_PPS_URL", "")
    urls = [u.strip() for u in raw.split(",")]
    if not raw or "" in urls:
        bad.append(f"{name}: BS_PPS_URL {raw!r} is empty or has an empty entry")
        continue
    if len(set(urls)) != len(urls):
        bad.append(f"{name}: BS_PPS_URL lists a URL twice: {raw}")
    for url in urls:
        host = urlsplit(url).hostname
        if host not in pps:
            bad.append(f"{name}: BS_PPS_URL entry {url} names {host!r}, which is not a picture service of this file")
        elif advertised.get(host) != url:
            bad.append(f"{name}: BS_PPS_URL entry {url} is not what {host} advertises (PPS_ADVERTISE_URL {advertised.get(host)})")
    missing = sorted(set(advertised.values()) - set(urls))
    if missing:
        bad.append(f"{name}: BS_PPS_URL does not list {', '.join(missing)}")
    lists[name] = sorted(urls)
    foreign = sorted(k for k in e if k.startswith("PPS_"))
    if foreign:
        bad.append(f"{name}: services mode refuses the picture service's variables, and this broadcast service gets {', '.join(foreign)}")
    url = e.get("BS_ADVERTISE_URL")
    if not url:
        bad.append(f"{name}: no BS_ADVERTISE_URL (the default, http://127.0.0.1:PORT, is unreachable from the other broadcast services)")
    else:
        u = urlsplit(url)
        port = listen_port(e["BS_LISTEN"]) if "BS_LISTEN" in e else 8080
        if u.scheme != "http" or u.hostname != name or u.port != port:
            bad.append(f"{name}: BS_ADVERTISE_URL {url} is not http://{name}:{port}")
        bs_addresses[name] = (name, port)
    deps = svc.get("depends_on") or {}
    for p in pps:
        if not isinstance(deps, dict) or (deps.get(p) or {}).get("condition") != "service_healthy":
            bad.append(f"{name}: does not wait for {p} (depends_on with condition: service_healthy)")
if len({tuple(v) for v in lists.values()}) > 1:
    bad.append(f"the broadcast services list different picture services: {lists}")

# The front proxy: every nginx upstream balances over exactly the broadcast services.
proxies = [n for n, s in services.items()
           if any(str(v).startswith(f"./{proxy_path}:") for v in s.get("volumes") or [])]
if len(proxies) != 1:
    bad.append(f"expected one service mounting {proxy_path}, found {proxies}")
conf = re.sub(r"#[^\n]*", "", open(proxy_path).read())
upstreams = re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", conf)
if not upstreams:
    bad.append(f"{proxy_path}: no upstream block")
want = {f"{h}:{p}" for h, p in bs_addresses.values()}
for upstream, body in upstreams:
    servers = set(re.findall(r"^\s*server\s+([^\s;]+)", body, re.M))
    if servers != want:
        bad.append(f"{proxy_path}: upstream {upstream} balances over {sorted(servers)}, not the broadcast services {sorted(want)}")
    if re.search(r"^\s*(hash|ip_hash|least_conn|random)\b", body, re.M):
        bad.append(f"{proxy_path}: upstream {upstream} is not round robin")
for directive in ("proxy_http_version 1.1", "proxy_set_header Upgrade", "proxy_set_header Connection", "proxy_read_timeout"):
    if directive not in conf:
        bad.append(f"{proxy_path}: no '{directive}' (WebSockets need it)")
for proxy in proxies:
    deps = services[proxy].get("depends_on") or {}
    for b in bs:
        if not isinstance(deps, dict) or (deps.get(b) or {}).get("condition") != "service_healthy":
            bad.append(f"{proxy}: does not wait for {b} (depends_on with condition: service_healthy)")

# Start order works only if what is waited for has a health check.
for name, svc in services.items():
    deps = svc.get("depends_on") or {}
    if isinstance(deps, dict):
        for dep, spec in deps.items():
            if (spec or {}).get("condition") == "service_healthy" and not (services.get(dep) or {}).get("healthcheck"):
                bad.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")

for message in bad:
    print(f"check-compose: FAIL: {compose_path}: {message}", file=sys.stderr)
if not bad:
    print(f"check-compose: ok: {compose_path}: {len(bs)} broadcast services list the {len(pps)} picture services "
          f"as they advertise themselves; {', '.join(proxies)} balances round robin over {', '.join(sorted(bs))}")
sys.exit(1 if bad else 0)
PY
  fail "docker-compose.yml cluster wiring"
fi

# --- 6. deploy/'s cluster wiring -------------------------------------------------------------
if [[ -n "$python" ]] && ! "$python" - deploy <<'PY'; then
import os, re, sys, yaml
from urllib.parse import urlsplit

root = sys.argv[1]
docs = []
for name in sorted(os.listdir(root)):
    if name.endswith(".yaml") and name != "kustomization.yaml":
        docs += [d for d in yaml.safe_load_all(open(os.path.join(root, name))) if d]
bad = []
def of_kind(kind):
    return [d for d in docs if d.get("kind") == kind]
def find(kind, name):
    return next((d for d in of_kind(kind) if d["metadata"]["name"] == name), None)

def seconds(text):
    """A duration as the services parse it: 500ms, 30s, 5m, 1h (or a combination)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        raise ValueError(f"cannot parse the duration {text!r}")
    return sum(float(a) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[b] for a, b in parts)

def config_of(pod_spec, container):
    """The container's environment: its ConfigMaps (envFrom), then env (values; references
    expanded the way Kubernetes does: only to variables defined earlier in the list)."""
    values, fields = {}, {}
    for ref in container.get("envFrom") or []:
        name = (ref.get("configMapRef") or {}).get("name")
        if name:
            cm = find("ConfigMap", name)
            if cm is None:
                bad.append(f"container {container['name']}: envFrom ConfigMap {name} is not in deploy/")
            else:
                values.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
    for item in container.get("env") or []:
        if "value" in item:
            def expand(m):
                ref = m.group(1)
                if ref in fields:
                    return "{" + fields[ref] + "}"
                if ref in values:
                    return values[ref]
                bad.append(f"container {container['name']}: {item['name']} uses $({ref}), which is not defined before it")
                return m.group(0)
            values[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, str(item["value"]))
        else:
            path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if path:
                fields[item["name"]] = path
            values.pop(item["name"], None)
    return values, fields

def containers(workload):
    return workload["spec"]["template"]["spec"]["containers"]

# --- picture services: a StatefulSet whose replicas advertise their stable names
pps_sets = [s for s in of_kind("StatefulSet") if any("primary-picture-service" in c.get("image", "") for c in containers(s))]
bs_deps = [d for d in of_kind("Deployment") if any("broadcast-service" in c.get("image", "") for c in containers(d))]
if len(pps_sets) != 1 or len(bs_deps) != 1:
    bad.append(f"expected one picture-service StatefulSet and one broadcast-service Deployment, found "
               f"{[s['metadata']['name'] for s in pps_sets]} and {[d['metadata']['name'] for d in bs_deps]}")
    pps_sets, bs_deps = pps_sets[:1], bs_deps[:1]
expected = []
for sts in pps_sets:
    name, ns, replicas = sts["metadata"]["name"], sts["metadata"].get("namespace", "default"), sts["spec"].get("replicas", 1)
    svc_name = sts["spec"].get("serviceName")
    svc = find("Service", svc_name)
    if svc is None or svc["spec"].get("clusterIP") != "None":
        bad.append(f"StatefulSet {name}: serviceName {svc_name} is not a headless Service in deploy/ (the stable names need one)")
    pod = containers(sts)[0]
    values, fields = config_of(sts["spec"]["template"]["spec"], pod)
    url = values.get("PPS_ADVERTISE_URL")
    if not url:
        bad.append(f"StatefulSet {name}: no PPS_ADVERTISE_URL in the pod's env")
        continue
    for cm in of_kind("ConfigMap"):
        if "PPS_ADVERTISE_URL" in (cm.get("data") or {}):
            bad.append(f"ConfigMap {cm['metadata']['name']} sets PPS_ADVERTISE_URL: it is per pod (pps.yaml)")
    if "{metadata.name}" not in url:
        bad.append(f"StatefulSet {name}: PPS_ADVERTISE_URL {url} is not built from the pod name (fieldRef metadata.name)")
    u = urlsplit(url.replace("{metadata.name}", f"{name}-0"))
    host_ok = u.hostname is not None and any(
        u.hostname == f"{name}-0.{svc_name}{suffix}" for suffix in ("", f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local"))
    if u.scheme != "ws" or u.path != "/bs" or not host_ok:
        bad.append(f"StatefulSet {name}: PPS_ADVERTISE_URL {url} is not ws://$(POD_NAME).{svc_name}[.{ns}.svc.cluster.local]:PORT/bs")
    if "PPS_LISTEN" in values and u.port != int(values["PPS_LISTEN"].rsplit(":", 1)[1]):
        bad.append(f"StatefulSet {name}: PPS_ADVERTISE_URL port {u.port} is not the PPS_LISTEN port")
    if svc is not None and u.port not in [p.get("port") for p in svc["spec"].get("ports", [])]:
        bad.append(f"StatefulSet {name}: PPS_ADVERTISE_URL port {u.port} is not a port of Service {svc_name}")
    expected = [url.replace("{metadata.name}", f"{name}-{i}") for i in range(replicas)]
    grace = sts["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    deadline = seconds(values.get("PPS_SHUTDOWN_TIMEOUT", "30s"))
    if grace <= deadline:
        bad.append(f"StatefulSet {name}: terminationGracePeriodSeconds {grace} does not exceed PPS_SHUTDOWN_TIMEOUT ({deadline:g} s)")

# --- broadcast services: the same list, one entry per replica; each pod advertises its IP
for dep in bs_deps:
    name = dep["metadata"]["name"]
    if dep["spec"].get("replicas", 1) < 2:
        bad.append(f"Deployment {name}: fewer than 2 replicas")
    pod_spec = dep["spec"]["template"]["spec"]
    pod = containers(dep)[0]
    values, fields = config_of(pod_spec, pod)
    raw = values.get("BS_PPS_URL", "")
    urls = [x.strip() for x in raw.split(",")] if raw else []
    if pps_sets and len(urls) != pps_sets[0]["spec"].get("replicas", 1):
        bad.append(f"Deployment {name}: BS_PPS_URL has {len(urls)} entries, the StatefulSet {len(expected)} replicas")
    if expected and sorted(urls) != sorted(expected):
        bad.append(f"Deployment {name}: BS_PPS_URL {raw} is not what the replicas advertise: {','.join(expected)}")
    foreign = sorted(k for k in values if k.startswith("PPS_"))
    if urls and foreign:
        bad.append(f"Deployment {name}: services mode refuses the picture service's variables, and its pods get {', '.join(foreign)} (a ConfigMap both read?)")
    for cm in of_kind("ConfigMap"):
        if "BS_ADVERTISE_URL" in (cm.get("data") or {}):
            bad.append(f"ConfigMap {cm['metadata']['name']} sets BS_ADVERTISE_URL: it is per pod (bs.yaml)")
    url = values.get("BS_ADVERTISE_URL", "")
    port = int(values.get("BS_LISTEN", "0.0.0.0:8080").rsplit(":", 1)[1])
    if not re.fullmatch(r"http://(\{status\.podIP\}|\[\{status\.podIP\}\]):" + str(port), url):
        bad.append(f"Deployment {name}: BS_ADVERTISE_URL {url or '(unset)'} is not http://$(POD_IP):{port} with POD_IP from status.podIP")
    if port not in [p.get("containerPort") for p in pod.get("ports", [])]:
        bad.append(f"Deployment {name}: the BS_LISTEN port {port} is not a containerPort")
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = ((pod.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0
    deadline = seconds(values.get("BS_DRAIN_TIMEOUT", "30s"))
    if grace <= pause + deadline:
        bad.append(f"Deployment {name}: terminationGracePeriodSeconds {grace} does not exceed preStop ({pause:g} s) + BS_DRAIN_TIMEOUT ({deadline:g} s)")

# --- probes and PDBs: every workload
workloads = pps_sets + bs_deps
for w in workloads:
    wname = f"{w['kind']} {w['metadata']['name']}"
    for c in containers(w):
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != path:
                bad.append(f"{wname}: container {c['name']} has no {probe} on {path}")
    labels = w["spec"]["template"]["metadata"].get("labels", {})
    budgets = [p for p in of_kind("PodDisruptionBudget")
               if p["spec"].get("selector", {}).get("matchLabels")
               and p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    if len(budgets) != 1:
        bad.append(f"{wname}: covered by {len(budgets)} PodDisruptionBudgets, not one")
    elif budgets[0]["spec"].get("maxUnavailable") != 1:
        bad.append(f"{wname}: PodDisruptionBudget {budgets[0]['metadata']['name']} is not maxUnavailable: 1 (one pod at a time)")

# --- the Gateway: public endpoints routed, the relay link not; references resolve
def path_matches(match, path):
    p = (match or {}).get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = p.get("type", "PathPrefix"), p.get("value", "/")
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")
    if kind == "RegularExpression":
        return re.fullmatch(value, path) is not None
    return False

routes = of_kind("HTTPRoute")
def routes_for(path):
    return [r["metadata"]["name"] for r in routes for rule in r["spec"].get("rules", [])
            if any(path_matches(m, path) for m in (rule.get("matches") or [{}]))]
for path in ("/", "/p/demo", "/static/app.js", "/pictures/demo/ws", "/pictures/demo/snapshot.png"):
    if not routes_for(path):
        bad.append(f"no HTTPRoute routes the public endpoint {path}")
for path in ("/pictures/demo/relay", "/metrics"):
    if routes_for(path):
        bad.append(f"HTTPRoute {', '.join(routes_for(path))} routes {path}, an internal endpoint (PROTOCOL.md §1, §9)")
for r in routes:
    rname = r["metadata"]["name"]
    for parent in r["spec"].get("parentRefs", []):
        gw = find("Gateway", parent["name"])
        if gw is None:
            bad.append(f"HTTPRoute {rname}: parent Gateway {parent['name']} is not in deploy/")
        elif parent.get("sectionName") and parent["sectionName"] not in [l["name"] for l in gw["spec"]["listeners"]]:
            bad.append(f"HTTPRoute {rname}: Gateway {parent['name']} has no listener {parent['sectionName']}")
    for rule in r["spec"].get("rules", []):
        for ref in rule.get("backendRefs", []):
            svc = find("Service", ref["name"])
            if svc is None or ref.get("port") not in [p.get("port") for p in svc["spec"].get("ports", [])]:
                bad.append(f"HTTPRoute {rname}: backend {ref['name']}:{ref.get('port')} is not a Service port in deploy/")
for policy in docs:
    for ref in (policy.get("spec") or {}).get("targetRefs") or []:
        if find(ref["kind"], ref["name"]) is None:
            bad.append(f"{policy['kind']} {policy['metadata']['name']}: target {ref['kind']} {ref['name']} is not in deploy/")
    lb = (policy.get("spec") or {}).get("loadBalancer") or {}
    if policy.get("kind") == "BackendTrafficPolicy" and lb.get("type") == "ConsistentHash":
        joins = routes_for("/pictures/demo/ws")
        if not any(ref["kind"] == "HTTPRoute" and ref["name"] in joins for ref in policy["spec"].get("targetRefs", [])):
            bad.append(f"BackendTrafficPolicy {policy['metadata']['name']}: the consistent hash does not apply to the WebSocket joins' route ({joins})")

for message in bad:
    print(f"check-compose: FAIL: {root}/: {message}", file=sys.stderr)
if not bad:
    print(f"check-compose: ok: {root}/: BS_PPS_URL lists the {len(expected)} StatefulSet replicas as they advertise "
          f"themselves; BS advertise their pod IP; PDBs, grace periods, probes and Gateway routes check out")
sys.exit(1 if bad else 0)
PY
  fail "deploy/ cluster wiring"
fi

if ((failures)); then
  echo "check-compose: $failures check(s) failed" >&2
  exit 1
fi
echo "check-compose: all checks passed"
