-- WebSocket tickets already used (the gateway target owns this): a ticket opens one socket across every gateway
-- instance and restart, not one per instance. Rows outlive their ticket by nothing: each use deletes the expired.
CREATE TABLE gateway_spent_tickets (
  jti        text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX gateway_spent_tickets_expiry ON gateway_spent_tickets (expires_at);
