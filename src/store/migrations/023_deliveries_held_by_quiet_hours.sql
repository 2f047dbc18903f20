-- Which pending deliveries quiet hours hold (the notifications target owns this): a change of quiet hours
-- looks at those again at once, and only those. It moved every pending delivery of the user to now, those
-- waiting out a receiver's Retry-After or their backoff too: the receiver was asked again at once, an attempt
-- counted. A constant default: no table rewrite. The rows held at the upgrade that were never tried are
-- marked; one held after a failed attempt cannot be told from a retry waiting, and waits for its window's end.
ALTER TABLE notification_deliveries ADD COLUMN held_by_quiet_hours boolean NOT NULL DEFAULT false;
UPDATE notification_deliveries SET held_by_quiet_hours = true
 WHERE status = 'pending' AND attempts = 0 AND claimed_by IS NULL AND next_attempt_at > now();
