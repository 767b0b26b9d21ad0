-- Claims search the heads of the callback queues alone (issue 18). Without
-- this, a claim walked every pending callback in time order and read each
-- one's row to find the few at the head of their handoff's queue: with 20,000
-- handoffs in flight, the relay fell to 60 callbacks/s.
--
-- A pending callback carries head_since from the moment it reaches the head
-- of its queue (at enqueue when nothing undelivered is before it, else when
-- the one before is delivered or replayed), so head_since IS NOT NULL marks
-- the heads. Callbacks written before this migration got it at their first
-- claim only: the heads never claimed get it now.
UPDATE callbacks SET head_since = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE state = 'pending' AND head_since IS NULL
  AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.handoff_id = callbacks.handoff_id
                  AND p.sequence < callbacks.sequence AND p.state <> 'delivered');

CREATE INDEX callbacks_heads_due ON callbacks (next_attempt_at)
WHERE state = 'pending' AND head_since IS NOT NULL;
