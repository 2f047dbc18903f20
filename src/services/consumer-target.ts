/**
 * Builds a target that consumes topics as one consumer group: validation, retries, dead-lettering and
 * metrics come from the bus layer; the service supplies only its handler.
 */
import type { BatchItem, BusMessage, Subscription } from '../bus/types.ts';
import { dlqTopic } from '../contracts/topics.ts';
import type { ConsumerGroupSource } from '../observability/metrics.ts';
import type { Runtime, RunningTarget, TargetDefinition } from '../runtime.ts';

export interface ConsumerTargetSpec {
  name: string;
  description: string;
  group: string;
  topics: readonly string[];
  /** Creates the handler once per process (stores, clients...). */
  setup(rt: Runtime): Promise<ConsumerService>;
}

export interface ConsumerService {
  handle(message: BusMessage): Promise<void>;
  /** Optional: handles a run of messages at once, all or nothing (see BatchHandler). */
  handleBatch?(items: readonly BatchItem[]): Promise<void>;
  stop?(): Promise<void>;
}

export function consumerTarget(spec: ConsumerTargetSpec): TargetDefinition {
  return {
    name: spec.name,
    description: spec.description,
    async start(rt: Runtime): Promise<RunningTarget> {
      const service = await spec.setup(rt);
      const batchHandler = service.handleBatch?.bind(service);
      const subscription: Subscription = await rt.bus.subscriber.subscribe({
        group: spec.group,
        topics: spec.topics,
        handler: (m) => service.handle(m),
        ...(batchHandler ? { batchHandler } : {}),
        hooks: rt.metrics.consumerHooks(spec.group),
      });
      const untrack = rt.metrics.trackConsumerGroup(spec.group, consumerGroupSource(rt, spec.group));
      return {
        stop: async () => {
          untrack();
          await subscription.close();
          await service.stop?.();
        },
      };
    },
  };
}

/** Lag and DLQ size of a group as the bus admin reports them (for /metrics; every transport). */
export function consumerGroupSource(rt: Runtime, group: string): ConsumerGroupSource {
  const admin = rt.bus.admin;
  return {
    lag: () => admin.lag(group),
    ...(admin.messageCount ? { deadLetters: () => admin.messageCount!(dlqTopic(group)) } : {}),
  };
}
