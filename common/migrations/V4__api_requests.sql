-- Calls of API functions (`/tasks/v1/api/{name}/…`), recorded after the response was sent.
CREATE TABLE api_requests (
    id            text PRIMARY KEY,
    function_name text NOT NULL,
    method        text NOT NULL,
    path          text NOT NULL,
    user_id       text,
    application_id text,
    status_code   integer NOT NULL,
    timestamp     timestamptz NOT NULL,
    duration      double precision NOT NULL,
    error         jsonb
);
CREATE INDEX api_requests_timestamp ON api_requests (timestamp);
CREATE INDEX api_requests_function ON api_requests (function_name, timestamp);

-- Their output lines, written by the worker; no foreign key, because the worker may store them
-- before the scheduler has recorded the request.
CREATE TABLE api_request_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    api_request_id text NOT NULL,
    timestamp      timestamptz NOT NULL,
    message        text NOT NULL
);
CREATE INDEX api_request_logs_request ON api_request_logs (api_request_id, timestamp, id);
