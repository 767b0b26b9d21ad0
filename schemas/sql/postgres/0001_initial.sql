-- bcci-gateway store, PostgreSQL. The same tables as the SQLite store.
-- Business times are Unix milliseconds (BIGINT) from the gateway's clock;
-- leases are TIMESTAMPTZ set and compared on the database's clock, so
-- processes with skewed clocks never steal each other's work.
-- Columns holding personal data are marked; the purge clears them.

CREATE TABLE handoffs (
    id                      TEXT PRIMARY KEY NOT NULL,
    client                  TEXT NOT NULL,
    request_id              TEXT NOT NULL,
    request_sha256          BYTEA NOT NULL,     -- SHA-256 of the canonical request
    kind                    TEXT NOT NULL,
    dossier_code            TEXT NOT NULL,
    agency_code             TEXT NOT NULL,
    status                  TEXT NOT NULL,
    reason                  TEXT,
    tracking_number         TEXT,
    carrier_order_id        TEXT,               -- orderHdrID
    carrier_original_id     TEXT,               -- originalID, for orderCancel
    postage_vnd             BIGINT,
    cod_amount_vnd          BIGINT NOT NULL,
    cod_settled             BOOLEAN NOT NULL DEFAULT FALSE,
    cod_held                BOOLEAN NOT NULL DEFAULT FALSE,
    details                 TEXT,               -- personal: the parsed request needed to dispatch
    due_at                  BIGINT,
    sla_due_at              BIGINT,
    sla_breached_at         BIGINT,
    sla_reached_at          BIGINT,             -- delivered (a return: first delivery attempt)
    watermark_at            BIGINT,             -- newest carrier event time that set the status
    watermark_rank          BIGINT,
    next_sequence           BIGINT NOT NULL DEFAULT 1,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    order_created_at        BIGINT,
    picked_up_at            BIGINT,
    delivered_at            BIGINT,
    terminal_at             BIGINT,
    last_carrier_event_at   BIGINT,             -- gateway clock, drives reconciliation
    polled_at               BIGINT,             -- last reconciliation poll
    cancel_requested_at     BIGINT,
    personal_data_erased_at BIGINT,
    UNIQUE (client, request_id)
);
CREATE INDEX handoffs_by_client_dossier ON handoffs (client, dossier_code, id);
CREATE INDEX handoffs_by_tracking_number ON handoffs (tracking_number);
CREATE INDEX handoffs_by_status ON handoffs (status, kind);

CREATE TABLE timeline (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handoff_id          TEXT NOT NULL REFERENCES handoffs (id),
    source              TEXT NOT NULL,
    status              TEXT,
    effect              TEXT NOT NULL,
    sequence            BIGINT,
    occurred_at         BIGINT NOT NULL,
    recorded_at         BIGINT NOT NULL,
    tracking_number     TEXT,
    carrier_code        BIGINT,
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
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handoff_id          TEXT NOT NULL REFERENCES handoffs (id),
    operation           TEXT NOT NULL,          -- create | cancel | cancel_duplicate
    target              TEXT NOT NULL DEFAULT '',  -- cancel_duplicate: the order's originalID
    state               TEXT NOT NULL,          -- pending | done | dead
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    first_attempt_at    BIGINT,                 -- the retry deadline runs from here
    first_create_at     BIGINT,                 -- lookups search from this Vietnam day
    next_step           TEXT NOT NULL DEFAULT 'call',  -- call | lookup | lookup_then_reject
    refusal             TEXT,                   -- a refusal awaiting its confirming lookup
    attempt_started_at  BIGINT,                 -- set before a call, cleared with its outcome
    lease_owner         TEXT,
    lease_expires_at    TIMESTAMPTZ,            -- the database's clock
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (handoff_id, operation, target)
);
CREATE INDEX postal_jobs_due ON postal_jobs (state, next_attempt_at);

-- Durable queue of signed callbacks to intake systems, ordered per handoff.
CREATE TABLE callbacks (
    id                  TEXT PRIMARY KEY NOT NULL,  -- webhook-id
    handoff_id          TEXT NOT NULL REFERENCES handoffs (id),
    client              TEXT NOT NULL,
    sequence            BIGINT NOT NULL,
    event_type          TEXT NOT NULL,
    body                BYTEA NOT NULL,         -- personal-free, fixed at enqueue
    content_type        TEXT NOT NULL,
    state               TEXT NOT NULL,          -- pending | delivered | dead
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    head_since          BIGINT,                 -- the retry deadline runs from here
    lease_owner         TEXT,
    lease_expires_at    TIMESTAMPTZ,            -- the database's clock
    last_status         BIGINT,
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    delivered_at        BIGINT,
    UNIQUE (handoff_id, sequence)
);
CREATE INDEX callbacks_due ON callbacks (state, next_attempt_at);

-- Carrier reports the gateway could not understand, kept raw for operators.
CREATE TABLE carrier_inbox (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source              TEXT NOT NULL,
    received_at         BIGINT NOT NULL,
    problem             TEXT NOT NULL,
    raw                 TEXT                    -- personal: may carry names or addresses
);
