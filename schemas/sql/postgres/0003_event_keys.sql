-- A carrier event naming its handoff by originalID alone is one indexed
-- lookup (issue 18): the statement matching events used to take all three
-- keys at once and scanned every handoff per event. Only handoffs with an
-- order have an originalID.
CREATE INDEX handoffs_by_original_id ON handoffs (carrier_original_id)
WHERE carrier_original_id IS NOT NULL;
