#!/usr/bin/env python3
"""Checks the request fixtures against schemas/handoff-request.schema.json and
the contract's validation rules (intake-api.md, "Create a handoff").

- every fixtures/requests/valid/*.json passes the JSON Schema and the
  contract's semantic rules; every valid *.xml has a JSON twin with the same
  stem carrying the same request (same canonical form: NFC, domestic phone
  form, absent == null == empty element), so tests can send JSON then XML
  and expect 200 the second time; request_ids are distinct per stem;
- fixtures/requests/invalid/expected.json lists exactly the files of that
  folder, with {"status", "slug", "fields"} (fields sorted, unique, [] unless
  422);
- 400 JSON fixtures do not parse; 422 fixtures (JSON, and XML read the way
  the gateway reads it) fail the JSON Schema, and the union of the schema's
  error paths and the semantic rules' error paths is EXACTLY the expected
  fields, so every fixture carries only the faults it lists;
- SCHEMA_ACCEPTS below lists the 422 fixtures whose only faults are semantic
  (configuration-dependent or beyond the loose phone pattern): the JSON
  Schema must accept them.
"""
import json
import os
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET

try:
    import jsonschema
except ImportError:  # fresh machine
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "jsonschema"])
    import jsonschema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(ROOT, "schemas", "handoff-request.schema.json")
VALID = os.path.join(ROOT, "fixtures", "requests", "valid")
INVALID = os.path.join(ROOT, "fixtures", "requests", "invalid")

# 422 fixtures that the JSON Schema accepts: their faults are semantic only.
SCHEMA_ACCEPTS = {
    "phone-landline-short.json",      # 02 + 8 digits: matches the loose phone pattern
    "phone-mobile-01.json",           # 01x mobile: matches the loose phone pattern
    "pickup-cod.json",                # pickup + COD: depends on postal.pickup_fee_addon
    "service-code-unknown.json",      # depends on postal.service_codes
    "xml-phone-bad.xml",
    "xml-pickup-cod.xml",
    "xml-service-code-unknown.xml",
}

# Defaults of operations.md, the configuration the fixtures assume.
SERVICE_CODES = {"CTN009", "ETN011", "ETN013"}
PICKUP_FEE_ADDON = ""

SLUGS = {400: "malformed", 401: "unauthorized", 404: "not-found", 409: "conflict",
         413: "too-large", 415: "unsupported-media-type", 422: "invalid",
         429: "rate-limited", 503: "unavailable"}

INT_FIELDS = {"weight_grams", "cod_amount_vnd"}
BOOL_FIELDS = {"return_appointment_slip"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def load_json(path):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def xml_to_obj(path):
    """Reads the XML form the way the contract says: nested elements are
    objects, an empty element is absent, integers and booleans are text."""
    with open(path, "rb") as f:
        data = f.read()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError("DTD")

    def conv(el):
        children = list(el)
        if children:
            out = {}
            for c in children:
                if c.tag in out:
                    raise ValueError(f"duplicate element {c.tag}")
                v = conv(c)
                if v is not None:
                    out[c.tag] = v
            return out
        text = el.text or ""
        if text == "":
            return None
        if el.tag in INT_FIELDS and re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        if el.tag in BOOL_FIELDS and text in ("true", "false"):
            return text == "true"
        return text

    root = ET.fromstring(data)
    if root.tag != "handoff":
        raise ValueError(f"root {root.tag}")
    return conv(root) or {}


def schema_paths(validator, obj):
    paths = set()
    for e in validator.iter_errors(obj):
        base = [str(p) for p in e.absolute_path]
        if e.validator == "required":
            for name in e.validator_value:
                if isinstance(e.instance, dict) and name not in e.instance:
                    paths.add(".".join(base + [name]))
        elif e.validator == "additionalProperties":
            known = set(e.schema.get("properties", {}))
            for name in e.instance:
                if name not in known:
                    paths.add(".".join(base + [name]))
        else:
            paths.add(".".join(base))
    return paths


PHONE_STRIP = re.compile(r"[ .\-()]")
PHONE_OK = re.compile(r"(?:0|\+84)(?:[35789][0-9]{8}|2[0-9]{9})")


def domestic_phone(p):
    p = PHONE_STRIP.sub("", p)
    return "0" + p[3:] if p.startswith("+84") else p


def semantic_paths(obj):
    """Rules the JSON Schema cannot express (or expresses loosely)."""
    paths = set()
    if not isinstance(obj, dict):
        return paths
    for who in ("agency", "citizen"):
        party = obj.get(who)
        if isinstance(party, dict) and isinstance(party.get("phone"), str):
            if not PHONE_OK.fullmatch(PHONE_STRIP.sub("", party["phone"])):
                paths.add(f"{who}.phone")
    cod = obj.get("cod_amount_vnd")
    if obj.get("kind") == "pickup" and isinstance(cod, int) and not isinstance(cod, bool) \
            and 0 < cod <= 100000000 and not PICKUP_FEE_ADDON:
        paths.add("cod_amount_vnd")
    sc = obj.get("service_code")
    if isinstance(sc, str) and sc not in SERVICE_CODES:
        paths.add("service_code")
    return paths


def canonical(v, key=None):
    if isinstance(v, dict):
        return {k: canonical(x, k) for k, x in sorted(v.items()) if x is not None}
    if isinstance(v, str):
        v = unicodedata.normalize("NFC", v)
        return domestic_phone(v) if key == "phone" else v
    return v


def main():
    with open(SCHEMA, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    # ---- valid
    valid_files = sorted(os.listdir(VALID))
    jsons = [f for f in valid_files if f.endswith(".json")]
    xmls = [f for f in valid_files if f.endswith(".xml")]
    if len(jsons) < 8 or len(xmls) < 6:
        fail(f"valid: need >= 8 JSON and >= 6 XML fixtures, have {len(jsons)} and {len(xmls)}")
    ids = {}
    for name in jsons:
        obj = load_json(os.path.join(VALID, name))
        bad = schema_paths(validator, obj) | semantic_paths(obj)
        if bad:
            fail(f"valid/{name}: rejected at {sorted(bad)}")
        rid = obj.get("request_id")
        if rid in ids:
            fail(f"valid/{name}: request_id {rid} also in {ids[rid]}")
        ids[rid] = name
    for name in xmls:
        try:
            obj = xml_to_obj(os.path.join(VALID, name))
        except Exception as e:  # noqa: BLE001
            fail(f"valid/{name}: unreadable: {e}")
            continue
        bad = schema_paths(validator, obj) | semantic_paths(obj)
        if bad:
            fail(f"valid/{name}: rejected at {sorted(bad)}")
        twin = name[:-4] + ".json"
        if twin not in jsons:
            fail(f"valid/{name}: no JSON twin {twin}")
            continue
        if canonical(obj) != canonical(load_json(os.path.join(VALID, twin))):
            fail(f"valid/{name}: not the same request as {twin}")
    for name in valid_files:
        if not name.endswith((".json", ".xml")):
            fail(f"valid/{name}: unexpected file")

    # ---- invalid
    with open(os.path.join(INVALID, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    files = {f for f in os.listdir(INVALID) if f != "expected.json"}
    for name in sorted(files - set(expected)):
        fail(f"invalid/{name}: not in expected.json")
    for name in sorted(set(expected) - files):
        fail(f"expected.json: {name}: no such file")
    for name in sorted(SCHEMA_ACCEPTS - set(expected)):
        fail(f"SCHEMA_ACCEPTS: {name}: not in expected.json")

    for name in sorted(files & set(expected)):
        exp = expected[name]
        path = os.path.join(INVALID, name)
        if set(exp) != {"status", "slug", "fields"}:
            fail(f"expected.json: {name}: keys {sorted(exp)}")
            continue
        status, slug, fields = exp["status"], exp["slug"], exp["fields"]
        if SLUGS.get(status) != slug:
            fail(f"expected.json: {name}: status {status} with slug {slug}")
        if fields != sorted(set(fields)):
            fail(f"expected.json: {name}: fields not sorted and unique")
        if status != 422 and fields:
            fail(f"expected.json: {name}: fields must be [] for status {status}")
        if status == 422 and not fields:
            fail(f"expected.json: {name}: a 422 must name its fields")

        if name.endswith(".json"):
            try:
                obj = load_json(path)
            except ValueError:
                obj = None
            if status == 400:
                if obj is not None:
                    fail(f"invalid/{name}: expected malformed, but it parses")
                continue
            if obj is None:
                fail(f"invalid/{name}: does not parse but expects {status}")
                continue
        elif name.endswith(".xml"):
            if status != 422:
                continue  # 400/415: .ci/check-xml-fixtures.sh checks them
            try:
                obj = xml_to_obj(path)
            except Exception as e:  # noqa: BLE001
                fail(f"invalid/{name}: unreadable but expects 422: {e}")
                continue
        else:
            fail(f"invalid/{name}: unexpected extension")
            continue

        if status != 422:
            continue
        from_schema = schema_paths(validator, obj)
        got = from_schema | semantic_paths(obj)
        if name in SCHEMA_ACCEPTS:
            if from_schema:
                fail(f"invalid/{name}: listed as semantic-only, but the schema rejects {sorted(from_schema)}")
        elif not from_schema:
            fail(f"invalid/{name}: the JSON Schema accepts it (add it to SCHEMA_ACCEPTS if its fault is semantic)")
        if got != set(fields):
            fail(f"invalid/{name}: faults {sorted(got)} != expected {fields}")

    n = len(jsons) + len(xmls) + len(expected)
    failing = {m.split(":")[0] for m in failures}
    print(f"check-json-fixtures: {n - len(failing)} passed, {len(failing)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
