-- A user's deliveries, newest first (GET /api/notifications/deliveries: what failed, and why).
CREATE INDEX notification_deliveries_user ON notification_deliveries (user_id, created_at DESC, id DESC);
