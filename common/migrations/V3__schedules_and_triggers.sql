-- Cron schedules: a cron expression read in an IANA time zone, instead of an interval.
ALTER TABLE schedules ALTER COLUMN interval_seconds DROP NOT NULL;
ALTER TABLE schedules ADD COLUMN cron text;
ALTER TABLE schedules ADD COLUMN timezone text;
ALTER TABLE schedules ADD CONSTRAINT schedules_interval_or_cron
    CHECK ((interval_seconds IS NULL) <> (cron IS NULL));

-- Which schedule slot a task was created for: one task per slot, whatever the number of
-- schedulers firing.
ALTER TABLE tasks ADD COLUMN schedule_id text;
ALTER TABLE tasks ADD COLUMN schedule_slot timestamptz;
CREATE UNIQUE INDEX tasks_schedule_slot ON tasks (schedule_id, schedule_slot)
    WHERE schedule_id IS NOT NULL;

-- Triggers: platform events of a type (exact, or a pattern with `*`) create tasks.
CREATE TABLE triggers (
    id                 text PRIMARY KEY,
    event_type         text NOT NULL,
    function_name      text NOT NULL,
    data               jsonb NOT NULL DEFAULT '{}',
    priority           bigint,
    delay_seconds      bigint NOT NULL DEFAULT 0 CHECK (delay_seconds >= 0),
    tags               text[] NOT NULL DEFAULT '{}',
    enabled            boolean NOT NULL DEFAULT true,
    creation_timestamp timestamptz NOT NULL,
    update_timestamp   timestamptz NOT NULL
);
CREATE INDEX triggers_enabled ON triggers (event_type) WHERE enabled;

-- One task per (trigger, event), however often the event is delivered.
ALTER TABLE tasks ADD COLUMN trigger_id text;
ALTER TABLE tasks ADD COLUMN event_id text;
CREATE UNIQUE INDEX tasks_trigger_event ON tasks (trigger_id, event_id) WHERE trigger_id IS NOT NULL;
