-- Who suspended a child key: 'admin' or 'master'; NULL unless the key is suspended. A
-- master may lift only its own suspensions. Suspensions made before this column existed
-- have no known author and are treated as an admin's, so they keep holding.
ALTER TABLE child_keys ADD COLUMN suspended_by TEXT;
UPDATE child_keys SET suspended_by = 'admin' WHERE status = 'suspended';
