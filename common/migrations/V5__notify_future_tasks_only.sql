-- NOTIFY serializes the commits of every notifying transaction on one database-wide lock
-- held through the WAL flush, which capped task transitions at a few hundred per second.
-- The scheduler now wakes its dispatcher in-process for the tasks it creates and polls while
-- tasks are in flight; the database only announces tasks due later (retries, scheduled
-- tasks from other processes), which a dispatcher could not otherwise know about.
DROP TRIGGER tasks_changed ON tasks;
CREATE TRIGGER future_task_inserted AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.start_timestamp > now())
    EXECUTE FUNCTION notify_tasks_changed();
