-- Search finds other forms of a word ("bills" finds "Pay electricity bill", "meetings" finds "meeting"):
-- the search vector holds each word as written (the `simple` configuration, for exact words in any language)
-- and its English stem (the `english` configuration). A part of a word still matches through the substring
-- test of the query (TaskStore.list).
DROP INDEX tasks_search;
ALTER TABLE tasks DROP COLUMN search;
ALTER TABLE tasks ADD COLUMN search tsvector GENERATED ALWAYS AS (
  to_tsvector('simple', title || ' ' || description) || to_tsvector('english', title || ' ' || description)
) STORED;
CREATE INDEX tasks_search ON tasks USING gin (search);
