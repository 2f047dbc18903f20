-- A chain key (AUDIT_CHAIN_KEY) makes a record's hash an HMAC: the record names the key by its fingerprint
-- (null: plain SHA-256, as before), and a retention anchor carries its own HMAC (src/services/audit/chain.ts).
ALTER TABLE audit_log ADD COLUMN key_id text;
ALTER TABLE audit_anchors ADD COLUMN key_id text;
ALTER TABLE audit_anchors ADD COLUMN mac text;
