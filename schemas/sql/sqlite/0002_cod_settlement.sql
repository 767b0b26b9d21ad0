-- COD followed to settlement (issue 17): what Vietnam Post reported with
-- code 21 (COD paid), kept until the handoff is delivered and relayed.
ALTER TABLE handoffs ADD COLUMN cod_settled_at INTEGER;
ALTER TABLE handoffs ADD COLUMN cod_amount_reported INTEGER;
