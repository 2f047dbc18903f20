-- Which pending deliveries quiet hours hold (the notifications target owns this): `held_until` is the end of
-- the quiet hours a delivery was put off to, and a change of quiet hours looks again at once at those whose
-- next attempt is still that time, and only those. It moved every pending delivery of the user to now, those
-- waiting out a receiver's Retry-After or their backoff too: the receiver was asked again at once, an attempt
-- counted. A time, not a flag: any other deferral (a previous version's worker's too, during a rolling upgrade)
-- moves `next_attempt_at` away from it. A column without a default: no table rewrite. The rows held at the
-- upgrade that were never tried are marked (through the due index: pending rows only); one held after a
-- failed attempt cannot be told from a retry waiting, and waits for its window's end.
ALTER TABLE notification_deliveries ADD COLUMN held_until timestamptz;
UPDATE notification_deliveries SET held_until = next_attempt_at
 WHERE status = 'pending' AND attempts = 0 AND claimed_by IS NULL AND next_attempt_at > now();
