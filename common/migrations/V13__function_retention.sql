-- A function may keep its finished tasks and API requests for another number of days than
-- the scheduler's retention.days (0: for ever); NULL follows the scheduler's setting.
ALTER TABLE functions ADD COLUMN retention_days integer
    CHECK (retention_days BETWEEN 0 AND 36500);
