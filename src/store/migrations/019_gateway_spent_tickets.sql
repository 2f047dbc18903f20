-- WebSocket tickets already used (the gateway target owns this): a ticket opens one socket across every gateway
-- instance and restart, not one per instance. Each use deletes the rows expired more than 5 minutes ago.
CREATE TABLE gateway_spent_tickets (
  jti        text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX gateway_spent_tickets_expiry ON gateway_spent_tickets (expires_at);
