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

/** The consumer groups of the services, one per target. */
export const GROUPS = {
  reminders: 'taskflow-reminders',
  recurrence: 'taskflow-recurrence',
  notifications: 'taskflow-notifications',
  audit: 'taskflow-audit',
  gateway: 'taskflow-gateway',
} as const;

/**
 * What each consuming target reads, as which group: the targets subscribe with these, and the AsyncAPI
 * document lists them. The gateway's group is per instance (`taskflow-gateway-<GATEWAY_INSTANCE_ID>`: every
 * instance sees every update) and dead-letters nothing (a client that missed an update resumes with ?since=).
 */
export const SUBSCRIPTIONS = {
  reminders: { group: GROUPS.reminders, topics: [TOPICS.taskEvents], deadLetters: true },
  recurrence: { group: GROUPS.recurrence, topics: [TOPICS.taskEvents], deadLetters: true },
  notifications: { group: GROUPS.notifications, topics: [TOPICS.reminders], deadLetters: true },
  audit: { group: GROUPS.audit, topics: [TOPICS.taskEvents, TOPICS.reminders], deadLetters: true },
  gateway: { group: `${GROUPS.gateway}-<instance>`, topics: [TOPICS.taskUpdates], deadLetters: false },
} as const;

export function topicSpec(name: string): TopicSpec {
  const known = TOPIC_SPECS.find((t) => t.name === name);
  if (known) return known;
  if (isDlqTopic(name)) return { name, ...DLQ_SPEC };
  return { name, partitions: 1, retentionMs: 7 * DAY };
}
