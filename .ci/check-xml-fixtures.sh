#!/usr/bin/env bash
# Checks the XML request fixtures against schemas/handoff-request.xsd, and a
# sample problem+xml document against schemas/problem.xsd, with xmllint.
#
# - every fixtures/requests/valid/*.xml must validate;
# - every fixtures/requests/invalid/*.xml that is a 422 with a schema fault
#   (bad pattern, length, range, type, missing or unknown element) must be
#   REJECTED by the XSD;
# - the semantic-only 422 fixtures (SEMANTIC below) must be ACCEPTED by the
#   XSD, so their only faults are the semantic ones expected.json lists;
# - the 400 fixtures that are not well-formed (NOT_WELL_FORMED) must fail to
#   parse; the DTD / entity ones (DTD) must be well-formed and declare a
#   DOCTYPE, so the gateway's 400 is about the DTD alone; these are never
#   schema-validated (xmllint runs with --nonet and without --noent);
#   ENTITY_BOMB ones must declare a DOCTYPE;
# - OTHER_ENCODING (415) fixtures must declare a non-UTF-8 encoding and be
#   otherwise valid.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v xmllint >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "xmllint missing: installing libxml2-utils" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxml2-utils >/dev/null
  else
    echo "xmllint not found (apt-get install libxml2-utils)" >&2
    exit 1
  fi
fi

XSD=schemas/handoff-request.xsd
PROBLEM_XSD=schemas/problem.xsd
VALID_DIR=fixtures/requests/valid
INVALID_DIR=fixtures/requests/invalid

NOT_WELL_FORMED=(xml-malformed.xml xml-truncated.xml)
DTD=(xml-doctype-entity.xml xml-doctype-external.xml xml-doctype-plain.xml)
# nested entity expansion: libxml2 itself refuses it ("entity reference
# loop"), so only its DOCTYPE is checked
ENTITY_BOMB=(xml-billion-laughs.xml)
OTHER_ENCODING=(xml-latin1.xml)
SEMANTIC=(xml-phone-bad.xml xml-pickup-cod.xml xml-service-code-unknown.xml)

fails=0
passes=0
ok()  { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
in_list() { local x=$1; shift; local y; for y in "$@"; do [ "$x" = "$y" ] && return 0; done; return 1; }
validates() { xmllint --noout --nonet --schema "$1" "$2" >/tmp/xmllint.$$.log 2>&1; }

xmllint --noout --nonet "$XSD" "$PROBLEM_XSD"

# ---- valid fixtures: must validate
shopt -s nullglob
valid=("$VALID_DIR"/*.xml)
[ "${#valid[@]}" -ge 6 ] || { bad "need at least 6 valid XML fixtures, have ${#valid[@]}"; }
for f in "${valid[@]}"; do
  if validates "$XSD" "$f"; then ok "$f validates"; else bad "$f does not validate:"; cat /tmp/xmllint.$$.log; fi
done

# ---- invalid fixtures
for name in "${NOT_WELL_FORMED[@]}" "${DTD[@]}" "${ENTITY_BOMB[@]}" "${OTHER_ENCODING[@]}" "${SEMANTIC[@]}"; do
  [ -f "$INVALID_DIR/$name" ] || bad "$INVALID_DIR/$name listed in this script but missing"
done
for f in "$INVALID_DIR"/*.xml; do
  name=$(basename "$f")
  if in_list "$name" "${NOT_WELL_FORMED[@]}"; then
    if xmllint --noout --nonet "$f" >/dev/null 2>&1; then bad "$f is well-formed (expected not)"; else ok "$f not well-formed"; fi
  elif in_list "$name" "${DTD[@]}"; then
    if ! grep -q '<!DOCTYPE' "$f"; then bad "$f has no DOCTYPE"
    elif ! xmllint --noout --nonet "$f" >/dev/null 2>&1; then bad "$f is not well-formed (its only fault should be the DTD)"
    else ok "$f well-formed with a DTD (skipped)"; fi
  elif in_list "$name" "${ENTITY_BOMB[@]}"; then
    if grep -q '<!ENTITY' "$f"; then ok "$f declares entities (skipped)"; else bad "$f declares no entity"; fi
  elif in_list "$name" "${OTHER_ENCODING[@]}"; then
    if head -n1 "$f" | grep -qi 'encoding="UTF-8"'; then bad "$f declares UTF-8"
    elif ! validates "$XSD" "$f"; then bad "$f is invalid besides its encoding:"; cat /tmp/xmllint.$$.log
    else ok "$f valid but not UTF-8"; fi
  elif in_list "$name" "${SEMANTIC[@]}"; then
    if validates "$XSD" "$f"; then ok "$f accepted by the XSD (semantic fault only)"
    else bad "$f is semantic-only but the XSD rejects it:"; cat /tmp/xmllint.$$.log; fi
  else
    if validates "$XSD" "$f"; then bad "$f ACCEPTED by the XSD (expected a schema fault)"
    else ok "$f rejected by the XSD"; fi
  fi
done

# ---- problem+xml sample
cat >/tmp/problem.$$.xml <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<problem xmlns="urn:ietf:rfc:7807">
  <type>urn:bcci:problem:invalid</type>
  <title>Invalid request</title>
  <status>422</status>
  <detail>2 fields are invalid</detail>
  <instance>01JDQ4M5X2K7A9B3C6D8E0F1G2</instance>
  <errors>
    <error><field>citizen.phone</field><message>not a Vietnamese phone number</message></error>
    <error><field>agency.address.ward_code</field><message>must be 5 digits</message></error>
  </errors>
</problem>
XML
if validates "$PROBLEM_XSD" /tmp/problem.$$.xml; then ok "problem+xml sample validates"; else bad "problem+xml sample:"; cat /tmp/xmllint.$$.log; fi
sed -i 's#xmlns="urn:ietf:rfc:7807"##' /tmp/problem.$$.xml
if validates "$PROBLEM_XSD" /tmp/problem.$$.xml; then bad "problem+xml without namespace accepted"; else ok "problem+xml without namespace rejected"; fi
rm -f /tmp/problem.$$.xml /tmp/xmllint.$$.log

echo "check-xml-fixtures: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
