-- Schedulers keep the definitions that direct executions and API calls read on every request
-- in memory, and drop them when any function changes: every write to `functions` is
-- announced, once per statement. Functions change rarely, so the notification's commit
-- cost (see V5) does not matter here.
CREATE FUNCTION notify_functions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('functions_changed', '');
    RETURN NULL;
END $$;
CREATE TRIGGER functions_changed AFTER INSERT OR UPDATE OR DELETE ON functions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_functions_changed();
