-- bcci-gateway store, SQLite. Times are Unix milliseconds (INTEGER).
-- Columns holding personal data are marked; the purge clears them.

CREATE TABLE handoffs (
    id                      TEXT PRIMARY KEY NOT NULL,
    client                  TEXT NOT NULL,
    request_id              TEXT NOT NULL,
    request_sha256          BLOB NOT NULL,      -- SHA-256 of the canonical request
    kind                    TEXT NOT NULL,
    dossier_code            TEXT NOT NULL,
    agency_code             TEXT NOT NULL,
    status                  TEXT NOT NULL,
    reason                  TEXT,
    tracking_number         TEXT,
    carrier_order_id        TEXT,               -- orderHdrID
    carrier_original_id     TEXT,               -- originalID, for orderCancel
    postage_vnd             INTEGER,
    cod_amount_vnd          INTEGER NOT NULL,
    cod_settled             INTEGER NOT NULL DEFAULT 0,
    cod_held                INTEGER NOT NULL DEFAULT 0,
    details                 TEXT,               -- personal: the parsed request needed to dispatch
    due_at                  INTEGER,
    sla_due_at              INTEGER,
    sla_breached_at         INTEGER,
    sla_reached_at          INTEGER,            -- delivered (a return: first delivery attempt)
    watermark_at            INTEGER,            -- newest carrier event time that set the status
    watermark_rank          INTEGER,
    next_sequence           INTEGER NOT NULL DEFAULT 1,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    order_created_at        INTEGER,
    picked_up_at            INTEGER,
    delivered_at            INTEGER,
    terminal_at             INTEGER,
    last_carrier_event_at   INTEGER,            -- gateway clock, drives reconciliation
    polled_at               INTEGER,            -- last reconciliation poll
    cancel_requested_at     INTEGER,
    personal_data_erased_at INTEGER,
    UNIQUE (client, request_id)
);
CREATE INDEX handoffs_by_client_dossier ON handoffs (client, dossier_code, id);
CREATE INDEX handoffs_by_tracking_number ON handoffs (tracking_number);
CREATE INDEX handoffs_by_status ON handoffs (status, kind);

CREATE TABLE timeline (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    handoff_id          TEXT NOT NULL REFERENCES handoffs (id),
    source              TEXT NOT NULL,
    status              TEXT,
    effect              TEXT NOT NULL,
    sequence            INTEGER,
    occurred_at         INTEGER NOT NULL,
    recorded_at         INTEGER NOT NULL,
    tracking_number     TEXT,
    carrier_code        INTEGER,
    carrier_text        TEXT,
    carrier_location    TEXT,
    reason              TEXT,
    operator            TEXT,
    raw                 TEXT                    -- personal: a stored carrier answer
);
CREATE INDEX timeline_by_handoff ON timeline (handoff_id, id);
CREATE INDEX timeline_by_carrier_event ON timeline (tracking_number, carrier_code, occurred_at);

-- Durable queue of calls to Vietnam Post (create, cancel).
CREATE TABLE postal_jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    handoff_id          TEXT NOT NULL REFERENCES handoffs (id),
    operation           TEXT NOT NULL,          -- create | cancel | cancel_duplicate
    target              TEXT NOT NULL DEFAULT '',  -- cancel_duplicate: the order's originalID
    state               TEXT NOT NULL,          -- pending | done | dead
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    first_attempt_at    INTEGER,                -- the retry deadline runs from here
    first_create_at     INTEGER,                -- lookups search from this Vietnam day
    next_step           TEXT NOT NULL DEFAULT 'call',  -- call | lookup | lookup_then_reject
    refusal             TEXT,                   -- a refusal awaiting its confirming lookup
    attempt_started_at  INTEGER,                -- set before a call, cleared with its outcome
    lease_owner         TEXT,
    lease_expires_at    INTEGER,
    last_error          TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (handoff_id, operation, target)
);
CREATE INDEX postal_jobs_due ON postal_jobs (state, next_attempt_at);

-- Durable queue of signed callbacks to intake systems, ordered per handoff.
CREATE TABLE callbacks (
    id                  TEXT PRIMARY KEY NOT NULL,  -- webhook-id
    handoff_id          TEXT NOT NULL REFERENCES handoffs (id),
    client              TEXT NOT NULL,
    sequence            INTEGER NOT NULL,
    event_type          TEXT NOT NULL,
    body                BLOB NOT NULL,          -- personal-free, fixed at enqueue
    content_type        TEXT NOT NULL,
    state               TEXT NOT NULL,          -- pending | delivered | dead
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    head_since          INTEGER,                -- the retry deadline runs from here
    lease_owner         TEXT,
    lease_expires_at    INTEGER,
    last_status         INTEGER,
    last_error          TEXT,
    created_at          INTEGER NOT NULL,
    delivered_at        INTEGER,
    UNIQUE (handoff_id, sequence)
);
CREATE INDEX callbacks_due ON callbacks (state, next_attempt_at);

-- Carrier reports the gateway could not understand, kept raw for operators.
CREATE TABLE carrier_inbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    source              TEXT NOT NULL,
    received_at         INTEGER NOT NULL,
    problem             TEXT NOT NULL,
    raw                 TEXT                    -- personal: may carry names or addresses
);
