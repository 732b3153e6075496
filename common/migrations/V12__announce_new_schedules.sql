-- A scheduler sleeps until its next schedule is due instead of looking every quarter of a
-- second, so a schedule created (by any scheduler) must wake them: each insert is announced,
-- once per statement. Firing a schedule moves it later, which needs no announcement, and the
-- API never moves one earlier.
CREATE FUNCTION notify_schedules_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('schedules_created', '');
    RETURN NULL;
END $$;
CREATE TRIGGER schedules_created AFTER INSERT ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION notify_schedules_created();
