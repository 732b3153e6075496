-- The dispatcher now sizes its window by the broker queue's ready messages, so nothing reads
-- tasks by `dispatched_at` any more. Without the index, marking a task dispatched changes no
-- indexed column and can be a HOT update (no index writes at all), given free room in the
-- page: tasks are written four times in a few milliseconds, so their pages keep some.
DROP INDEX IF EXISTS tasks_dispatched;
ALTER TABLE tasks SET (fillfactor = 80);
-- A busy task table turns over quickly; keep its dead rows and planner statistics fresh.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
