-- The reminders service's tables: the last task state it applied, and the durable reminder schedule.

-- Per task: the highest task version applied (older events are ignored) and whether it was deleted.
CREATE TABLE reminder_tasks (
  task_id    uuid PRIMARY KEY,
  user_id    text NOT NULL,
  version    integer NOT NULL,
  deleted    boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reminder_tasks_user ON reminder_tasks (user_id, task_id);

-- One row per reminder (id = a hash of task id and planned instant). The scheduler claims due rows with
-- SELECT ... FOR UPDATE SKIP LOCKED and, in the same transaction, marks them and writes their event.
CREATE TABLE reminder_schedule (
  id             uuid PRIMARY KEY,
  task_id        uuid NOT NULL,
  user_id        text NOT NULL,
  title          text NOT NULL,
  specs          jsonb NOT NULL,
  due_at         timestamptz,
  planned_at     timestamptz NOT NULL, -- the instant the plan asked for
  remind_at      timestamptz NOT NULL, -- when it fires next (planned_at, or later after a snooze)
  status         text NOT NULL CHECK (status IN ('scheduled', 'triggered', 'missed', 'dismissed')),
  dismiss_reason text CHECK (dismiss_reason IN ('user', 'task_completed', 'task_deleted', 'rescheduled')),
  snoozed        boolean NOT NULL DEFAULT false,
  fire_count     integer NOT NULL DEFAULT 0,
  triggered_at   timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reminder_schedule_due ON reminder_schedule (remind_at, id) WHERE status = 'scheduled';
CREATE INDEX reminder_schedule_task ON reminder_schedule (task_id);
