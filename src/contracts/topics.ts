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

export function topicSpec(name: string): TopicSpec {
  const known = TOPIC_SPECS.find((t) => t.name === name);
  if (known) return known;
  if (isDlqTopic(name)) return { name, ...DLQ_SPEC };
  return { name, partitions: 1, retentionMs: 7 * DAY };
}
