-- A function's version now names one definition for good. It comes from a sequence, so a
-- function deleted and created again under the same name does not start over at 1: workers
-- key warm processes and cached definitions by name and version, and would otherwise take
-- the new function for the old one.
CREATE SEQUENCE function_versions;
SELECT setval('function_versions', (SELECT COALESCE(max(version), 0) + 1 FROM functions));
ALTER TABLE functions ALTER COLUMN version SET DEFAULT nextval('function_versions');
