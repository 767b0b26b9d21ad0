#!/usr/bin/env bash
# The API robustness run: schemathesis against schemas/openapi.yaml and a
# running gateway (the debug binary given as $1), authenticated with the
# example configuration's intake token. Fails on any finding:
#   - a 5xx, or an answer (problem documents included) that does not conform
#     to the document: status code, content type, headers, body schema;
#   - a refused request that stored something (hook check, see
#     .ci/schemathesis_hooks.py), or more handoffs stored than were accepted;
#   - a callback the gateway sent that does not conform to the document's
#     `webhooks` section (body schema, Standard Webhooks headers, signature).
# Vietnam Post is the simulator (`postal-sim`, loopback), callbacks go to a
# loopback receiver: nothing leaves the machine. Bounded by --max-time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${1:?usage: .ci/schemathesis.sh path/to/bcci-gateway}
ST_VERSION=4.32.5
ST_MAX_TIME=${BCCI_ST_MAX_TIME:-120}
die() { echo "schemathesis: FAILED: $*" >&2; exit 1; }

# ---- schemathesis, pinned, in its own virtualenv (kept between runs)
# (jsonschema checks the callbacks against the document's `webhooks`.)
JSONSCHEMA_VERSION=4.26.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/bcci-ci/schemathesis-$ST_VERSION-jsonschema-$JSONSCHEMA_VERSION"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION" \
   || ! "$VENV/bin/python" -c 'import jsonschema, yaml' 2>/dev/null; then
  echo "installing schemathesis $ST_VERSION and jsonschema $JSONSCHEMA_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION" "jsonschema==$JSONSCHEMA_VERSION" \
    || die "pip install schemathesis==$ST_VERSION jsonschema==$JSONSCHEMA_VERSION failed"
fi
echo "schemathesis: $("$VENV/bin/schemathesis" --version)"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ] && [ -s "$WORK/serve.log" ]; then
    echo "---- last lines of the gateway's log" >&2
    tail -n 30 "$WORK/serve.log" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

read -r HTTP_PORT ADMIN_PORT POSTAL_PORT CALLBACK_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')
INTAKE="http://127.0.0.1:$HTTP_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
TOKEN=demo-intake-token
WEBHOOK_KEY=demo-webhook-key-0123456789
CALLBACK_SECRET=whsec_ZGVtby1jYWxsYmFjay1zZWNyZXQtMDEyMw==

# ---- Vietnam Post simulator and the intake system's callback receiver
"$BIN" postal-sim --listen "127.0.0.1:$POSTAL_PORT" --no-webhooks >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
python3 .ci/callback_receiver.py "$CALLBACK_PORT" "$WORK/callbacks.jsonl" &
PIDS+=($!)

# ---- the gateway on the example configuration, everything on loopback
CONFIG="$WORK/config.toml"
sed -e "s#^listen = \"0.0.0.0:8080\"#listen = \"127.0.0.1:$HTTP_PORT\"#" \
    -e "s#^admin_listen = \"127.0.0.1:9090\"#admin_listen = \"127.0.0.1:$ADMIN_PORT\"#" \
    -e "s#^url = \"sqlite://data/bcci.db\"#url = \"sqlite://$WORK/store/bcci.db\"#" \
    -e "s#^base_url = \"https://[^\"]*\"#base_url = \"http://127.0.0.1:$POSTAL_PORT\"#" \
    -e "s#^callback_url = \"https://[^\"]*\"#callback_url = \"http://127.0.0.1:$CALLBACK_PORT/callback\"#" \
    -e "s#^requests_per_second = 50#requests_per_second = 1000#" \
    -e "s#^level = \"info\"#level = \"warn\"#" \
    deploy/config.example.toml >"$CONFIG"
for want in "listen = \"127.0.0.1:$HTTP_PORT\"" "admin_listen = \"127.0.0.1:$ADMIN_PORT\"" \
            "url = \"sqlite://$WORK/store/bcci.db\"" "base_url = \"http://127.0.0.1:$POSTAL_PORT\"" \
            "callback_url = \"http://127.0.0.1:$CALLBACK_PORT/callback\"" \
            "requests_per_second = 1000" "webhook_keys = \[\"$WEBHOOK_KEY\"\]"; do
  grep -q "^$want" "$CONFIG" || die "could not rewrite deploy/config.example.toml ($want)"
done
if grep -E '^(base_url|callback_url) = "https' "$CONFIG"; then
  die "a URL off this machine is left in the configuration"
fi

"$BIN" serve --config "$CONFIG" >"$WORK/serve.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
ready=0
for _ in $(seq 1 60); do
  kill -0 "$GATEWAY_PID" 2>/dev/null || die "the gateway exited before it was ready"
  if curl -fsS -o /dev/null "$ADMIN/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || die "/readyz did not answer 200 within 30 s"
echo "gateway ready: intake $INTAKE, Vietnam Post simulator on $POSTAL_PORT, callbacks to $CALLBACK_PORT"

# ---- schemathesis
st_rc=0
BCCI_ST_DB="$WORK/store/bcci.db" BCCI_ST_LOG="$WORK/answers.jsonl" \
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=.ci \
  "$VENV/bin/schemathesis" --config-file .ci/schemathesis.toml run schemas/openapi.yaml \
    --url "$INTAKE" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,ignored_auth,unsupported_method,xml_answers_conform,nothing_stored_for_refused_requests \
    --phases examples,coverage,fuzzing,stateful \
    --max-time "$ST_MAX_TIME" \
    --workers 1 \
    --request-timeout 10 \
    --seed "${BCCI_ST_SEED:-20261125}" \
    --generation-database none \
    --no-color \
  || st_rc=$?
[ -s "$WORK/answers.jsonl" ] || die "schemathesis made no request"
python3 - "$WORK/answers.jsonl" <<'PYEOF'
import collections, json, sys
by = collections.Counter()
for line in open(sys.argv[1], encoding="utf-8"):
    a = json.loads(line)
    by[(a["method"], a["path"], a["status"])] += 1
for (m, p, s), n in sorted(by.items()):
    print(f"  {n:6d}  {m:5s} {p}  {s}")
PYEOF
[ "$st_rc" = 0 ] || die "schemathesis reported findings (exit $st_rc)"

# ---- accounting: every stored handoff was answered 202 to someone
accepted=$(python3 -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if (a := json.loads(l))["method"] == "POST"
          and a["path"] == "/v1/handoffs" and a["status"] == 202))' "$WORK/answers.jsonl")
stored=$(python3 -c '
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(con.execute("SELECT count(*) FROM handoffs").fetchone()[0])' "$WORK/store/bcci.db")
echo "handoffs accepted (202): $accepted, stored: $stored"
[ "$stored" = "$accepted" ] || die "$stored handoffs stored but $accepted accepted"

# ---- callbacks: one handoff created and cancelled here, so at least one
# callback is sent; every callback received must conform to `webhooks`.
status=$(curl -sS -o "$WORK/create.json" -w '%{http_code}' "$INTAKE/v1/handoffs" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data-binary "$(python3 -c '
import json; d = json.load(open("fixtures/requests/valid/return-cod.json"))
d["request_id"] = "CI-SCHEMATHESIS-CALLBACK"; print(json.dumps(d))')")
[ "$status" = 202 ] || die "POST /v1/handoffs for the callback check answered $status"
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/create.json")
status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$INTAKE/v1/handoffs/$id/cancel" \
  -H "Authorization: Bearer $TOKEN")
[ "$status" = 202 ] || die "POST /v1/handoffs/$id/cancel answered $status"
got=0
for _ in $(seq 1 60); do
  if grep -q "$id" "$WORK/callbacks.jsonl" 2>/dev/null && grep "$id" "$WORK/callbacks.jsonl" | grep -q cancelled; then
    got=1; break
  fi
  sleep 0.5
done
[ "$got" = 1 ] || die "no 'cancelled' callback for $id within 30 s"
"$VENV/bin/python" - "$WORK/callbacks.jsonl" "$CALLBACK_SECRET" <<'PYEOF'
import base64, hashlib, hmac, json, re, sys
import jsonschema, yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

doc = yaml.safe_load(open("schemas/openapi.yaml", encoding="utf-8"))
registry = Registry().with_resource("urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012))
def validator(ref):
    return jsonschema.Draft202012Validator({"$ref": "urn:doc" + ref}, registry=registry,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
def resolve(ref):
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node

key = base64.b64decode(sys.argv[2].removeprefix("whsec_"))
failures, seen = [], 0
for line in open(sys.argv[1], encoding="utf-8"):
    cb = json.loads(line)
    seen += 1
    event = json.loads(cb["body"])
    hook = doc["webhooks"].get(event.get("type"))
    if hook is None:
        failures.append(f"callback type {event.get('type')!r} is not in webhooks")
        continue
    body = hook["post"]["requestBody"]
    body = resolve(body["$ref"]) if "$ref" in body else body
    media = cb["headers"].get("content-type", "").split(";")[0]
    if media not in body["content"]:
        failures.append(f"{event['type']}: content type {media!r} not documented")
        continue
    schema = body["content"][media]["schema"]
    errors = list(validator(schema["$ref"]).iter_errors(event))
    failures += [f"{event['type']} #{event.get('sequence')}: {e.message[:200]}" for e in errors]
    for p in hook["post"]["parameters"]:
        p = resolve(p["$ref"]) if "$ref" in p else p
        value = cb["headers"].get(p["name"].lower())
        if value is None or ("pattern" in p["schema"] and not re.search(p["schema"]["pattern"], value)):
            failures.append(f"{event['type']}: header {p['name']} = {value!r}")
    signed = f"{cb['headers']['webhook-id']}.{cb['headers']['webhook-timestamp']}.{cb['body']}".encode()
    want = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if want not in cb["headers"].get("webhook-signature", "").split(" "):
        failures.append(f"{event['type']}: webhook-signature does not verify")
for f in failures:
    print("FAIL", f)
print(f"callbacks: {seen} received, {len(failures)} findings")
sys.exit(1 if failures or not seen else 0)
PYEOF
echo "schemathesis: no findings"
