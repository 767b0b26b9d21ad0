#!/usr/bin/env bash
# Validates schemas/openapi.yaml and schemas/admin-openapi.yaml (OpenAPI 3.1)
# with openapi-spec-validator, and checks that they agree with the rest of the
# repository:
# - components.schemas.HandoffRequest is schemas/handoff-request.schema.json,
#   and components.schemas.BoardFigures is schemas/board-figures.schema.json
#   (less $schema and $id), so the two cannot drift;
# - the components the admin document shares with the intake one are equal;
# - every example validates against its schema, every valid JSON fixture
#   against HandoffRequest;
# - the answers and media types the contract lists are documented;
# - the 16 statuses match domain.md when ../shared/contract is beside the repo.
set -euo pipefail

cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import openapi_spec_validator, yaml, jsonschema' >/dev/null 2>&1; then
  echo "installing openapi-spec-validator, pyyaml, jsonschema" >&2
  "$PY" -m pip install -q openapi-spec-validator pyyaml jsonschema
fi

"$PY" - <<'PYEOF'
import glob, json, os, re, sys
import yaml
import jsonschema
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

failures = []
passed = [0]
def check(cond, msg):
    if cond:
        passed[0] += 1
        print("ok  ", msg)
    else:
        failures.append(msg)
        print("FAIL", msg)

docs = {}
for path in ["schemas/openapi.yaml", "schemas/admin-openapi.yaml"]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    try:
        validate(doc)
        check(True, f"{path} is a valid OpenAPI {doc.get('openapi')} document")
    except Exception as e:  # noqa: BLE001
        check(False, f"{path}: {type(e).__name__}: {str(e)[:500]}")
    check(str(doc.get("openapi", "")).startswith("3.1"), f"{path} declares OpenAPI 3.1")
    docs[path] = doc

intake = docs["schemas/openapi.yaml"]
admin = docs["schemas/admin-openapi.yaml"]

# every local $ref resolves
def refs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.append(v)
            else:
                refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)
    return out

def resolve(doc, ref):
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node

for path, doc in docs.items():
    bad = []
    for r in refs(doc, []):
        if not r.startswith("#/"):
            bad.append(r)
            continue
        try:
            resolve(doc, r)
        except (KeyError, TypeError):
            bad.append(r)
    check(not bad, f"{path}: every $ref is local and resolves {sorted(set(bad))}")

# HandoffRequest == the JSON Schema file
with open("schemas/handoff-request.schema.json", encoding="utf-8") as f:
    request_schema = json.load(f)
stripped = {k: v for k, v in request_schema.items() if k not in ("$schema", "$id")}
check(intake["components"]["schemas"].get("HandoffRequest") == stripped,
      "openapi.yaml HandoffRequest equals schemas/handoff-request.schema.json")

# BoardFigures == the board's JSON Schema file (its $defs refs made absolute)
with open("schemas/board-figures.schema.json", encoding="utf-8") as f:
    board_schema = {k: v for k, v in json.load(f).items() if k not in ("$schema", "$id")}
board_schema = json.loads(json.dumps(board_schema).replace(
    '"#/$defs/', '"#/components/schemas/BoardFigures/$defs/'))
check(intake["components"]["schemas"].get("BoardFigures") == board_schema,
      "openapi.yaml BoardFigures equals schemas/board-figures.schema.json")

# shared components are identical
for kind in ("schemas", "parameters", "headers"):
    for name, node in admin["components"].get(kind, {}).items():
        if name in intake["components"].get(kind, {}):
            check(node == intake["components"][kind][name],
                  f"admin-openapi.yaml components.{kind}.{name} equals openapi.yaml's")

# examples validate
def validator_for(doc, ref):
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:doc", resource)
    return jsonschema.Draft202012Validator({"$ref": "urn:doc" + ref}, registry=registry,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

def check_example(doc, name, schema_ref, value):
    errs = list(validator_for(doc, schema_ref).iter_errors(value))
    check(not errs, f"example {name} validates against {schema_ref}"
          + ("" if not errs else f": {errs[0].message[:200]}"))

ex = intake["components"]["examples"]
check_example(intake, "HandoffRequestJson", "#/components/schemas/HandoffRequest", ex["HandoffRequestJson"]["value"])
check_example(intake, "HandoffJson", "#/components/schemas/HandoffWithTimeline", ex["HandoffJson"]["value"])
check_example(intake, "CallbackJson", "#/components/schemas/CallbackEvent", ex["CallbackJson"]["value"])
check_example(intake, "ProblemInvalid", "#/components/schemas/Problem", ex["ProblemInvalid"]["value"])
for p in sorted(glob.glob("fixtures/requests/valid/*.json")):
    with open(p, encoding="utf-8") as f:
        check_example(intake, p, "#/components/schemas/HandoffRequest", json.load(f))
list_example = {"items": [{k: v for k, v in ex["HandoffJson"]["value"].items() if k != "timeline"}], "next_cursor": None}
check_example(intake, "a HandoffList", "#/components/schemas/HandoffList", list_example)
bad_id = dict(ex["HandoffJson"]["value"], id="h_01JDQ4M5X2K7A9B3C6D8E0F1GU")  # U is not Crockford base32
check(list(validator_for(intake, "#/components/schemas/Handoff").iter_errors(bad_id)) != [],
      "Handoff id pattern refuses a non-ULID")

# the answers the contract lists
PROBLEM_TYPES = {"application/problem+json", "application/problem+xml"}
def responses_of(doc, path, method):
    op = doc["paths"][path][method]
    out = {}
    for code, r in op["responses"].items():
        out[str(code)] = resolve(doc, r["$ref"]) if "$ref" in r else r
    return op, out

def expect(doc, path, method, codes, problem_types=PROBLEM_TYPES):
    try:
        op, rs = responses_of(doc, path, method)
    except KeyError:
        check(False, f"{method.upper()} {path} documented")
        return None, {}
    missing = [c for c in codes if c not in rs]
    check(not missing, f"{method.upper()} {path} answers {codes} (missing {missing})")
    for c in codes:
        if c in rs and int(c) >= 400:
            types = set(rs[c].get("content", {}))
            check(problem_types <= types, f"{method.upper()} {path} {c} as {sorted(problem_types)}")
    return op, rs

op, rs = expect(intake, "/v1/handoffs", "post", ["200", "202", "400", "401", "409", "413", "415", "422", "429", "503"])
check(op is not None and {"application/json", "application/xml"} <= set(op["requestBody"]["content"]),
      "POST /v1/handoffs takes JSON and XML")
check("Location" in rs.get("202", {}).get("headers", {}), "POST /v1/handoffs 202 has Location")
for c in ("200", "202"):
    check({"application/json", "application/xml"} <= set(rs.get(c, {}).get("content", {})),
          f"POST /v1/handoffs {c} in JSON and XML")
for c in ("429", "503"):
    check("Retry-After" in rs.get(c, {}).get("headers", {}), f"POST /v1/handoffs {c} has Retry-After")
op, rs = expect(intake, "/v1/handoffs/{id}", "get", ["200", "401", "404"])
check({"application/json", "application/xml"} <= set(rs.get("200", {}).get("content", {})),
      "GET /v1/handoffs/{id} 200 in JSON and XML")
op, rs = expect(intake, "/v1/handoffs", "get", ["200", "401", "422"])
names = {p.get("name") or resolve(intake, p["$ref"])["name"] for p in (op or {}).get("parameters", [])}
check({"dossier_code", "request_id", "limit", "cursor"} <= names, "GET /v1/handoffs query parameters")
expect(intake, "/v1/handoffs/{id}/cancel", "post", ["202", "404", "409"])
op, rs = expect(intake, "/v1/postal/vnpost/events/{webhook_key}", "post", ["200", "400", "401", "403", "413"],
                problem_types={"application/problem+json"})
check(op is not None and op.get("security") == [], "the Vietnam Post webhook needs no bearer token")
expect(intake, "/healthz", "get", ["200"], problem_types=set())
expect(intake, "/readyz", "get", ["200", "503"], problem_types=set())
check(intake["components"]["securitySchemes"]["bearer"].get("scheme") == "bearer", "bearer security scheme")
hooks = set(intake.get("webhooks", {}))
check(hooks == {"handoff.status_changed", "handoff.cod_settled", "handoff.cancel_refused", "gateway.test"},
      f"webhooks: the contract's three callback types and the console's test ({sorted(hooks)})")
for name, hook in intake.get("webhooks", {}).items():
    params = {resolve(intake, p["$ref"])["name"] if "$ref" in p else p["name"] for p in hook["post"].get("parameters", [])}
    check({"webhook-id", "webhook-timestamp", "webhook-signature"} <= params, f"webhook {name} headers")

for path, method, codes in [
    ("/v1/admin/handoffs", "get", ["200", "401"]),
    ("/v1/admin/handoffs/{id}", "get", ["200", "401", "404"]),
    ("/v1/admin/handoffs/{id}/replay", "post", ["200", "404", "409"]),
    ("/v1/admin/handoffs/{id}/resolve", "post", ["200", "404", "409", "422"]),
    ("/v1/admin/handoffs/{id}/erase", "post", ["200", "404"]),
    ("/v1/admin/callbacks", "get", ["200", "401"]),
    ("/v1/admin/callbacks/{id}/replay", "post", ["202", "404"]),
    ("/v1/admin/callbacks/replay", "post", ["202", "401"]),
    ("/v1/admin/stats", "get", ["200", "401", "422"]),
]:
    op, rs = expect(admin, path, method, codes, problem_types={"application/problem+json"})
    if op is not None and method == "post":
        params = {resolve(admin, p["$ref"])["name"] if "$ref" in p else p["name"] for p in op.get("parameters", [])}
        check("X-Operator" in params, f"{method.upper()} {path} takes X-Operator")
op, rs = expect(admin, "/v1/admin/stats", "get", ["200"], problem_types=set())
check({"application/json", "text/csv"} <= set(rs.get("200", {}).get("content", {})), "stats in JSON and CSV")
op, rs = expect(admin, "/metrics", "get", ["200"], problem_types=set())
check(any(t.startswith("text/plain") for t in rs.get("200", {}).get("content", {})), "/metrics as text/plain")

# statuses match domain.md
statuses = intake["components"]["schemas"]["HandoffStatus"]["enum"]
check(len(statuses) == 16 and len(set(statuses)) == 16, "16 distinct handoff statuses")
domain = "../shared/contract/domain.md"
if os.path.exists(domain):
    with open(domain, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Statuses", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    check(listed == statuses, f"HandoffStatus lists domain.md's statuses in order")
else:
    print("skip  domain.md not found beside the repository")

print(f"check-openapi: {passed[0]} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
PYEOF
