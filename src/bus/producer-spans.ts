/**
 * With tracing on: a PRODUCER span per message as it is put on the bus (the relay's publish, or the write into
 * the embedded log), child of the event's `traceparent` (the operation that wrote it), whose context rides
 * along as the `traceparent` transport header so each consumer's span is its child. The event itself is
 * published unchanged. With tracing off: the messages as they are, at no cost.
 */
import { SpanKind, recordError, startSpan, traceparentOf, tracingEnabled } from '../observability/tracing.ts';
import type { OutgoingMessage } from './types.ts';

export interface TracedMessages<M extends OutgoingMessage> {
  messages: M[];
  /** Ends the spans, recording `err` when the publish failed. */
  end(err?: unknown): void;
}

export function producerSpans<M extends OutgoingMessage>(
  messages: readonly M[],
  system: string,
  attributes: (m: M) => Record<string, string> = () => ({}),
): TracedMessages<M> {
  if (!tracingEnabled()) return { messages: [...messages], end: () => undefined };
  const spans = messages.map((m) =>
    startSpan(`publish ${m.topic}`, {
      kind: SpanKind.PRODUCER,
      parent: m.event.traceparent,
      attributes: {
        'messaging.system': system,
        'messaging.operation.type': 'publish',
        'messaging.destination.name': m.topic,
        'messaging.message.id': m.event.id,
        'cloudevents.event_type': m.event.type,
        ...attributes(m),
      },
    }),
  );
  return {
    messages: messages.map((m, i) => {
      const traceparent = traceparentOf(spans[i]);
      return traceparent ? { ...m, headers: { ...m.headers, traceparent } } : m;
    }),
    end: (err?: unknown) => {
      for (const span of spans) {
        if (!span) continue;
        if (err !== undefined) recordError(span, err);
        span.end();
      }
    },
  };
}
