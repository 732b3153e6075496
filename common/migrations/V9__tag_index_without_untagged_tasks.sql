-- The tag index leaves out tasks without tags. A GIN index holds an entry even for an empty
-- array, and every write of a task that is not a HOT update (its claim, its completion)
-- added one: most tasks have no tags, so those entries were most of the index's writes and
-- none of its use. Tag queries say `tags <> '{}'` in the same words, which lets the planner
-- use this index; they also use `&&`, which a GIN index answers, where `= ANY` it cannot.
-- The index is rebuilt in this migration's transaction: on a large table, writes to tasks
-- wait for it.
DROP INDEX IF EXISTS tasks_tags;
CREATE INDEX tasks_tags ON tasks USING gin (tags) WHERE tags <> '{}';
