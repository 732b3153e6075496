-- When the running attempt was claimed: queue lag = claimed_at - start_timestamp.
ALTER TABLE tasks ADD COLUMN claimed_at timestamptz;

-- The dispatcher's timer: the earliest start time among waiting tasks.
CREATE INDEX tasks_next_start ON tasks (start_timestamp) WHERE status = 'new';
-- Dispatched but not yet claimed tasks, counted to bound the broker window.
CREATE INDEX tasks_dispatched ON tasks (dispatched_at) WHERE status = 'new' AND dispatched_at IS NOT NULL;

-- Events to publish, written in the same transaction as the change they announce, so a crash
-- can neither lose nor invent one. A relay publishes and deletes them.
CREATE TABLE outbox (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    routing_key        text NOT NULL,
    payload            jsonb NOT NULL,
    creation_timestamp timestamptz NOT NULL DEFAULT now()
);

-- Wake the dispatcher when tasks appear or change status (a claim frees room in the broker
-- window) and when a function is enabled; once per statement, not per row.
CREATE FUNCTION notify_tasks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasks_changed', '');
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_changed AFTER INSERT OR UPDATE OF status ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_tasks_changed();
CREATE TRIGGER functions_enabled AFTER UPDATE OF enabled ON functions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_tasks_changed();

CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
