-- Code archives are stored once per content hash and shared by the functions that use it.
-- When a function's code is replaced, or the function deleted, an archive no function uses
-- any more goes with it, so deploying new code does not pile up old archives for ever.
-- A worker that read the old definition a moment before loads the current one instead.
CREATE FUNCTION delete_unused_function_code() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.code_sha256 IS DISTINCT FROM NEW.code_sha256 THEN
        BEGIN
            DELETE FROM function_code c
            WHERE c.sha256 = OLD.code_sha256
              AND NOT EXISTS (SELECT 1 FROM functions f WHERE f.code_sha256 = OLD.code_sha256);
        EXCEPTION WHEN foreign_key_violation THEN
            -- A function stored at the same moment uses it: it stays.
            NULL;
        END;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER functions_code_released
    AFTER UPDATE OF code_sha256 OR DELETE ON functions
    FOR EACH ROW EXECUTE FUNCTION delete_unused_function_code();

-- The archives left behind before this migration.
DELETE FROM function_code c
WHERE NOT EXISTS (SELECT 1 FROM functions f WHERE f.code_sha256 = c.sha256);
