-- Function code, stored once per content hash so workers can cache unpacked code by it.
CREATE TABLE function_code (
    sha256             text PRIMARY KEY,
    archive            bytea NOT NULL,
    size_bytes         integer NOT NULL,
    creation_timestamp timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE functions (
    name                  text PRIMARY KEY,
    description           text,
    enabled               boolean NOT NULL DEFAULT true,
    entry_point           text NOT NULL,
    runtime               text NOT NULL,
    time_limit            integer NOT NULL CHECK (time_limit BETWEEN 3 AND 300),
    memory_limit          integer NOT NULL CHECK (memory_limit BETWEEN 128 AND 10240),
    environment_variables jsonb NOT NULL DEFAULT '{}',
    permission_mode       text NOT NULL DEFAULT 'permissionRequired'
                          CHECK (permission_mode IN ('permissionRequired', 'allUsers', 'public')),
    default_priority      bigint,
    retry_enabled         boolean NOT NULL DEFAULT false,
    errors_to_retry       text[] NOT NULL DEFAULT '{}',
    code_sha256           text NOT NULL REFERENCES function_code (sha256),
    -- Bumped on every change: warm runtime processes of an older version are retired.
    version               bigint NOT NULL DEFAULT 1,
    creation_timestamp    timestamptz NOT NULL,
    update_timestamp      timestamptz NOT NULL
);

CREATE TABLE tasks (
    id                        text PRIMARY KEY,
    function_name             text NOT NULL,
    status                    text NOT NULL
                              CHECK (status IN ('new', 'inProgress', 'complete', 'failed', 'canceled', 'retried')),
    data                      jsonb NOT NULL DEFAULT '{}',
    tags                      text[] NOT NULL DEFAULT '{}',
    priority                  bigint NOT NULL DEFAULT 0,
    start_timestamp           timestamptz NOT NULL,
    status_changed_timestamp  timestamptz NOT NULL,
    created_by_application_id text,
    created_by_user_id        text,
    retried_by_task_id        text,
    retry_for_task_ids        text[] NOT NULL DEFAULT '{}',
    error                     jsonb,
    result                    jsonb,
    -- Internal columns, never shown by the API.
    source                    text NOT NULL,
    -- Incremented by every claim; an outcome is written only if it still matches (fencing).
    attempt                   integer NOT NULL DEFAULT 0,
    -- Last time the dispatcher published the task to the broker.
    dispatched_at             timestamptz,
    -- While inProgress: the worker renews it; when it passes, the task is a zombie.
    lease_expires_at          timestamptz,
    creation_timestamp        timestamptz NOT NULL,
    update_timestamp          timestamptz NOT NULL
);

-- The dispatcher's query: due tasks by priority desc, start time asc.
CREATE INDEX tasks_due ON tasks (priority DESC, start_timestamp ASC) WHERE status = 'new';
-- The sweeper's query.
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'inProgress';
-- List filters.
CREATE INDEX tasks_function_name ON tasks (function_name, creation_timestamp);
CREATE INDEX tasks_status ON tasks (status, creation_timestamp);
CREATE INDEX tasks_creation ON tasks (creation_timestamp);
CREATE INDEX tasks_tags ON tasks USING gin (tags);

CREATE TABLE task_logs (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id   text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    timestamp timestamptz NOT NULL,
    message   text NOT NULL
);
CREATE INDEX task_logs_task ON task_logs (task_id, timestamp, id);

CREATE TABLE schedules (
    id                 text PRIMARY KEY,
    function_name      text NOT NULL,
    interval_seconds   bigint NOT NULL CHECK (interval_seconds > 0),
    data               jsonb NOT NULL DEFAULT '{}',
    priority           bigint,
    start_timestamp    timestamptz NOT NULL,
    next_timestamp     timestamptz NOT NULL,
    creation_timestamp timestamptz NOT NULL,
    update_timestamp   timestamptz NOT NULL
);
CREATE INDEX schedules_next ON schedules (next_timestamp);
