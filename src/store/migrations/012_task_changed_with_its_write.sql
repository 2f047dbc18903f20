-- task.changed is written by the statement that writes its task event (docs/adr/0011): its per-user
-- `sequence` now comes from the event sink's stream row `task.changed/<user>`. The broadcaster's counters
-- carry over, so a client resuming with `?since=<sequence>` from before the upgrade stays in order.
INSERT INTO event_streams (stream_key, last_seq)
SELECT 'task.changed/' || user_id, last_seq FROM broadcaster_sequences
ON CONFLICT (stream_key) DO UPDATE SET last_seq = greatest(event_streams.last_seq, excluded.last_seq);
DROP TABLE broadcaster_sequences;
DELETE FROM processed_events WHERE consumer = 'taskflow-broadcaster';
