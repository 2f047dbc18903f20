-- Tasks and their outbox (the API target owns these).
CREATE TABLE tasks (
  id            uuid PRIMARY KEY,
  user_id       text NOT NULL,
  title         text NOT NULL,
  description   text NOT NULL DEFAULT '',
  status        text NOT NULL CHECK (status IN ('pending', 'completed')),
  priority      text NOT NULL CHECK (priority IN ('none', 'low', 'medium', 'high', 'urgent')),
  priority_rank smallint NOT NULL,
  tags          text[] NOT NULL DEFAULT '{}',
  tag_keys      text[] NOT NULL DEFAULT '{}', -- lower-cased tags, for case-insensitive filters
  due_date      timestamptz,
  reminders     jsonb,
  recurrence    jsonb,
  series_id     uuid,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  completed_at  timestamptz,
  version       integer NOT NULL DEFAULT 1,
  search        tsvector GENERATED ALWAYS AS (to_tsvector('simple', title || ' ' || description)) STORED
);
CREATE INDEX tasks_user_created ON tasks (user_id, created_at DESC, id DESC);
CREATE INDEX tasks_user_updated ON tasks (user_id, updated_at DESC, id DESC);
CREATE INDEX tasks_user_due ON tasks (user_id, due_date, id);
CREATE INDEX tasks_user_priority ON tasks (user_id, priority_rank DESC, id DESC);
CREATE INDEX tasks_tag_keys ON tasks USING gin (tag_keys);
CREATE INDEX tasks_search ON tasks USING gin (search);

-- Per-user settings used by the domain (time zone for recurrence and "today", default reminder offsets).
CREATE TABLE user_settings (
  user_id           text PRIMARY KEY,
  timezone          text NOT NULL DEFAULT 'UTC',
  default_reminders jsonb NOT NULL DEFAULT '["P1D", "PT1H"]',
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per user whose update takes a row lock for the rest of the transaction: a user's writes are
-- serialized, so outbox ids (and the per-user sequence) follow commit order for that user.
CREATE TABLE event_streams (
  stream_key text PRIMARY KEY,
  last_seq   bigint NOT NULL
);

-- The transactional outbox: events written in the same transaction as the state they describe.
CREATE TABLE outbox (
  id           bigserial PRIMARY KEY,
  topic        text NOT NULL,
  key          text NOT NULL,
  stream_seq   bigint NOT NULL,
  event_id     text NOT NULL UNIQUE,
  event_type   text NOT NULL,
  event        jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz,
  attempts     integer NOT NULL DEFAULT 0,
  last_error   text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Leases (one active relay, scheduler shards, ...): holder + expiry, renewed by heartbeats.
CREATE TABLE leases (
  name        text PRIMARY KEY,
  holder      text NOT NULL,
  lease_until timestamptz NOT NULL
);

-- Idempotency ledger of consumers: an event's effect and its id are recorded in one transaction.
CREATE TABLE processed_events (
  consumer     text NOT NULL,
  event_id     text NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);

-- The embedded bus: a partitioned log in the database (BUS=embedded).
CREATE TABLE bus_topics (
  topic        text PRIMARY KEY,
  partitions   integer NOT NULL,
  retention_ms bigint NOT NULL
);
CREATE TABLE bus_partitions (
  topic       text NOT NULL,
  partition   integer NOT NULL,
  next_offset bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (topic, partition)
);
CREATE TABLE bus_messages (
  topic      text NOT NULL,
  partition  integer NOT NULL,
  "offset"   bigint NOT NULL,
  key        text NOT NULL,
  headers    jsonb NOT NULL DEFAULT '{}',
  value      jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition, "offset")
);
CREATE TABLE bus_group_offsets (
  group_id   text NOT NULL,
  topic      text NOT NULL,
  partition  integer NOT NULL,
  "offset"   bigint NOT NULL, -- the next offset to deliver
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE bus_group_members (
  group_id     text NOT NULL,
  member_id    text NOT NULL,
  topics       text[] NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  PRIMARY KEY (group_id, member_id)
);
CREATE TABLE bus_partition_owners (
  group_id    text NOT NULL,
  topic       text NOT NULL,
  partition   integer NOT NULL,
  member_id   text NOT NULL,
  lease_until timestamptz NOT NULL,
  PRIMARY KEY (group_id, topic, partition)
);
