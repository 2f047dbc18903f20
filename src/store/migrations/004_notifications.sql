-- The notifications service's tables: preferences, push subscriptions, the in-app inbox and deliveries.

CREATE TABLE notification_preferences (
  user_id         text PRIMARY KEY,
  email           text,
  email_enabled   boolean NOT NULL DEFAULT true,
  push_enabled    boolean NOT NULL DEFAULT true,
  in_app_enabled  boolean NOT NULL DEFAULT true,
  webhook_enabled boolean NOT NULL DEFAULT true,
  webhook_url     text,
  webhook_secret  text,
  quiet_start     text, -- local HH:MM
  quiet_end       text,
  quiet_timezone  text,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE push_subscriptions (
  id         uuid PRIMARY KEY,
  user_id    text NOT NULL,
  endpoint   text NOT NULL,
  p256dh     text NOT NULL,
  auth       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, endpoint)
);

-- One row per (reminder event, channel): the unique key makes a duplicate delivery of an event a no-op.
-- Rows are claimed by the delivery loop (next_attempt_at doubles as the claim's expiry), retried with
-- backoff, and marked sent, dead (gave up) or skipped (the channel was turned off meanwhile).
CREATE TABLE notification_deliveries (
  id              uuid PRIMARY KEY,
  event_id        text NOT NULL,
  channel         text NOT NULL CHECK (channel IN ('email', 'push', 'in_app', 'webhook')),
  user_id         text NOT NULL,
  payload         jsonb NOT NULL,
  status          text NOT NULL CHECK (status IN ('pending', 'sent', 'dead', 'skipped')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL,
  claimed_by      text,
  last_error      text,
  sent_at         timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (event_id, channel)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'pending';

-- The in-app inbox: written in the same transaction that marks its delivery sent.
CREATE TABLE notifications (
  id          uuid PRIMARY KEY,
  user_id     text NOT NULL,
  delivery_id uuid NOT NULL UNIQUE,
  reminder_id text NOT NULL,
  task_id     uuid NOT NULL,
  title       text NOT NULL,
  body        text NOT NULL,
  due_at      timestamptz,
  remind_at   timestamptz NOT NULL,
  created_at  timestamptz NOT NULL,
  read_at     timestamptz
);
CREATE INDEX notifications_user ON notifications (user_id, created_at DESC, id DESC);
