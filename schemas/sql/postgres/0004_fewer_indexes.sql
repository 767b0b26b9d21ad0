-- Fewer index writes per handoff (issue 18), as in SQLite 0005.
-- No query reads the timeline by item code and carrier code: every read
-- of the timeline is by handoff (timeline_by_handoff). The index cost a
-- B-tree insert for each of the nine or so entries of every handoff.
DROP INDEX timeline_by_carrier_event;
-- A handoff has no item code until Vietnam Post reports one; the index holds
-- only those that do, so intake writes nothing to it.
DROP INDEX handoffs_by_tracking_number;
CREATE INDEX handoffs_by_tracking_number ON handoffs (tracking_number)
WHERE tracking_number IS NOT NULL;
