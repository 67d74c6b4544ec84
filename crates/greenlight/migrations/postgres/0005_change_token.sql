-- Kept for the same columns as SQLite's: there a change token guards the statements sent in
-- one query with a compare-and-set; PostgreSQL gets the same guarantee from one statement.
ALTER TABLE requests ADD COLUMN change_token TEXT;
