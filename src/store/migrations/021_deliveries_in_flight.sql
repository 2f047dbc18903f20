-- The deliveries being sent, by user (the notifications target owns this): a claim passes over a user who has
-- as many in flight as one user may (claimDeliveries), so one user's slow receivers do not take every slot of
-- the delivery loop. Only rows in flight are in it.
CREATE INDEX notification_deliveries_in_flight ON notification_deliveries (user_id)
  WHERE status = 'pending' AND claimed_by IS NOT NULL;
