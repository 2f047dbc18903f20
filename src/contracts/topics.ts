/**
 * The topic table of docs/architecture.md section 3. KAFKA_TOPIC_PARTITIONS and KAFKA_TOPIC_RETENTION_MS override the
 * partitions and retention of topics being created (config.ts, allTopics).
 */
export const TOPICS = {
  taskEvents: 'task-events',
  reminders: 'reminders',
  taskUpdates: 'task-updates',
} as const;
export type TopicName = (typeof TOPICS)[keyof typeof TOPICS];

export interface TopicSpec {
  name: string;
  partitions: number;
  retentionMs: number;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export const TOPIC_SPECS: readonly TopicSpec[] = [
  { name: TOPICS.taskEvents, partitions: 3, retentionMs: 30 * DAY },
  { name: TOPICS.reminders, partitions: 3, retentionMs: 7 * DAY },
  { name: TOPICS.taskUpdates, partitions: 3, retentionMs: HOUR },
];

/** Dead-letter topics are per consumer group: `<group>.dlq`, one partition, kept 30 days. */
export const dlqTopic = (group: string) => `${group}.dlq`;
export const DLQ_SPEC = { partitions: 1, retentionMs: 30 * DAY } as const;
export const isDlqTopic = (topic: string) => topic.endsWith('.dlq');
/**
 * The consumer group whose positions on `<group>.dlq` say how far its dead letters were replayed (`taskflow dlq
 * replay`): a cursor no process consumes with, left out of the groups `taskflow lag` lists.
 */
export const dlqReplayCursor = (group: string) => `${group}.dlq-replayed`;
export const isDlqReplayCursor = (group: string) => group.endsWith('.dlq-replayed');

/** KAFKA_TOPIC_PARTITIONS (the event topics) and KAFKA_TOPIC_RETENTION_MS (by topic name, or `dlq`). */
export interface TopicOverrides {
  partitions?: number | undefined;
  retentionMs?: Readonly<Record<string, number>>;
}

/** How a topic is created: its table entry, a dead-letter topic's, or one partition for 7 days, overridden. */
export function topicSpec(name: string, overrides: TopicOverrides = {}): TopicSpec {
  const retention = overrides.retentionMs ?? {};
  const known = TOPIC_SPECS.find((t) => t.name === name);
  if (known)
    return {
      name,
      partitions: overrides.partitions ?? known.partitions,
      retentionMs: retention[name] ?? known.retentionMs,
    };
  if (isDlqTopic(name)) return { name, ...DLQ_SPEC, retentionMs: retention.dlq ?? DLQ_SPEC.retentionMs };
  return { name, partitions: 1, retentionMs: 7 * DAY };
}
