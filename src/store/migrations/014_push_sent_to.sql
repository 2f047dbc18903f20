-- The push subscriptions a push delivery has reached: a retry sends only to those it has not (one device that
-- failed made every other device of the user get the notification again at each retry).
ALTER TABLE notification_deliveries ADD COLUMN push_sent_to text[] NOT NULL DEFAULT '{}';
