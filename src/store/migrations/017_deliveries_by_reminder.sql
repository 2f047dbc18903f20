-- A reminder's deliveries, found when it is dismissed or fires again (cancelPendingDeliveries, at every firing):
-- through the user's index it read every delivery of the user in the retention window.
CREATE INDEX notification_deliveries_reminder ON notification_deliveries (user_id, (payload->>'reminder_id'));
