-- The status index now holds only finished tasks (complete, failed, canceled, retried).
-- `new` and `inProgress` tasks are each covered by their own partial index already
-- (tasks_due, tasks_next_start; tasks_lease), and they are the rows written most: every
-- task entered this index twice more on its way to `complete`. It also took `status = 'new'`
-- queries away from those narrower indexes whenever the statistics said no task was new.
DROP INDEX IF EXISTS tasks_status;
CREATE INDEX tasks_status ON tasks (status, creation_timestamp)
    WHERE status NOT IN ('new', 'inProgress');
