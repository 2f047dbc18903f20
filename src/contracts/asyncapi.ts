/**
 * The AsyncAPI 3.1 document of Taskflow's events, built from the same topic table, schemas and subscriptions
 * the code runs on (served by the api target at /asyncapi.json). Messages are described as they travel on
 * Kafka: CloudEvents in binary content mode, the attributes as `ce_*` headers, the event's `data` as the
 * value, keyed by user id. The value is what this deployment writes: JSON described by the JSON Schema, or
 * with EVENT_ENCODING=avro Avro in Confluent framing described by the Avro schema (schemaFormat Avro). The
 * embedded bus and Dapr carry the same events whole, as JSON (structured mode).
 */
import {
  AVRO_CONTENT_TYPE,
  AVRO_NAMESPACE,
  AVRO_SCHEMA_FORMAT,
  avroFullName,
  avroSchemaOf,
  type AvroSchema,
} from './avro.ts';
import { EVENT_TYPES, publishedSchema, type EventType } from './schemas.ts';
import { DLQ_SPEC, TOPIC_SPECS, dlqTopic, type TopicName } from './topics.ts';

type Json = Record<string, unknown>;

/** How this deployment writes event data on Kafka (EVENT_ENCODING) and the registry subjects' prefix. */
export interface WireFormat {
  encoding: 'json' | 'avro';
  /** KAFKA_TOPIC_PREFIX: part of the Avro subjects' names. */
  subjectPrefix?: string;
}

/** A target as the event contract sees it: what it reads as which group, and what it writes (its manifest). */
export interface EventParty {
  name: string;
  consumes?: {
    group: string;
    topics: readonly TopicName[];
    deadLetters: boolean;
    perInstance?: boolean;
  };
  produces: readonly EventType[];
}

/** `api (task.created, ...) and recurrence (...)`: who writes which events of a topic. */
function producersOf(topic: string, parties: readonly EventParty[]): string {
  const writers = parties.flatMap((p) => {
    const types = p.produces.filter((t) => EVENT_TYPES[t].topic === topic);
    return types.length ? [`${p.name} (${types.join(', ')})`] : [];
  });
  return writers.length ? writers.join(', ') : 'the targets';
}

const ref = (path: string) => ({ $ref: `#/${path}` });

const EXAMPLE_STRINGS: Record<string, string> = {
  'date-time': '2026-12-04T09:00:00.000Z',
  uuid: '0193a1b2-7c4d-7e5f-8a9b-0c1d2e3f4a5b',
};

/** A value the schema accepts, built from it: the first of each choice, the required fields of an object. */
export function exampleOf(schema: Json): unknown {
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (Array.isArray(schema.anyOf)) return exampleOf(schema.anyOf[0] as Json);
  switch (schema.type) {
    case 'string':
      return EXAMPLE_STRINGS[schema.format as string] ?? 'user-1';
    case 'integer':
    case 'number':
      return typeof schema.minimum === 'number' ? schema.minimum : 1;
    case 'boolean':
      return true;
    case 'null':
      return null;
    case 'array':
      return [];
    case 'object': {
      const props = (schema.properties ?? {}) as Record<string, Json>;
      return Object.fromEntries(
        ((schema.required ?? []) as string[]).map((k) => [k, exampleOf(props[k] ?? {})]),
      );
    }
    default:
      return {};
  }
}

/**
 * `value` (an example of the JSON data) as an Avro datum of `schema`: an absent optional field is null (Avro
 * has no absent field), named types resolved by name.
 */
function avroDatumOf(schema: AvroSchema, value: unknown, named = new Map<string, Json>()): unknown {
  if (typeof schema === 'string') {
    const type = named.get(schema) ?? named.get(`${AVRO_NAMESPACE}.${schema}`);
    return type ? avroDatumOf(type, value, named) : value;
  }
  if (Array.isArray(schema)) {
    if (value === null || value === undefined) return null;
    return avroDatumOf(schema.find((b) => b !== 'null') ?? 'null', value, named);
  }
  if (typeof schema.name === 'string') named.set(schema.name, schema);
  if (schema.type === 'array' && Array.isArray(value))
    return value.map((v) => avroDatumOf(schema.items as AvroSchema, v, named));
  if (schema.type !== 'record' || value === null || typeof value !== 'object') return value;
  const fields = schema.fields as { name: string; type: AvroSchema }[];
  return Object.fromEntries(
    fields.map((f) => [f.name, avroDatumOf(f.type, (value as Json)[f.name] ?? null, named)]),
  );
}

function headersOf(type: EventType, envelope: Json, contentType: string): Json {
  const props = (envelope.properties ?? {}) as Record<string, Json>;
  const headers: Record<string, Json> = {};
  for (const [name, schema] of Object.entries(props)) {
    if (name === 'data' || name === 'datacontenttype') continue;
    headers[`ce_${name}`] = name === 'specversion' || name === 'type' ? schema : { type: 'string' };
  }
  headers.ce_type = { const: type };
  headers['content-type'] = { const: contentType };
  headers.traceparent = props.traceparent ?? { type: 'string' };
  const required = ((envelope.required ?? []) as string[]).filter((r) => r !== 'data').map((r) => `ce_${r}`);
  return { type: 'object', required: [...required, 'content-type'], properties: headers };
}

export function asyncApiDocument(
  version: string,
  parties: readonly EventParty[],
  wire: WireFormat = { encoding: 'json' },
): Json {
  const avro = wire.encoding === 'avro';
  const contentType = avro ? AVRO_CONTENT_TYPE : 'application/json';
  const messages: Record<string, Json> = {};
  for (const type of Object.keys(EVENT_TYPES) as EventType[]) {
    const envelope = publishedSchema(type);
    const { $schema: _, ...data } = (envelope.properties as Record<string, Json>).data!;
    const headers = headersOf(type, envelope, contentType);
    const avroSchema = avro ? avroSchemaOf(type) : undefined;
    const subject = `${wire.subjectPrefix ?? ''}${EVENT_TYPES[type].topic}-${avroFullName(type)}`;
    messages[type] = {
      name: type,
      title: type,
      summary: `${type}, schema version ${EVENT_TYPES[type].version} (${envelope.$id as string})`,
      ...(avroSchema
        ? {
            description: `The value is Avro in Confluent framing: byte 0, the writer schema's id in the schema registry (4 bytes, big-endian; subject ${subject}), then the Avro binary of this schema, generated from the JSON Schema ${envelope.$id as string}. Data Avro cannot hold (an invalid event on its way to a dead-letter topic) is written as JSON (content-type application/json); readers take both.`,
          }
        : {}),
      contentType,
      headers,
      // AsyncAPI's Multi Format Schema Object for Avro; the JSON Schema is the payload otherwise.
      payload: avroSchema ? { schemaFormat: AVRO_SCHEMA_FORMAT, schema: avroSchema } : data,
      examples: [
        {
          name: `${type}-minimal`,
          summary: 'the required fields',
          headers: exampleOf(headers),
          payload: avroSchema ? avroDatumOf(avroSchema, exampleOf(data)) : exampleOf(data),
        },
      ],
      bindings: {
        kafka: {
          key: { type: 'string', description: 'the user id (CloudEvents partitionkey)' },
          bindingVersion: '0.5.0',
        },
      },
    };
  }
  const typesOn = (topic: string) =>
    (Object.keys(EVENT_TYPES) as EventType[]).filter((t) => EVENT_TYPES[t].topic === topic);
  const kafkaTopic = (name: string, partitions: number, retentionMs: number) => ({
    kafka: {
      topic: name,
      partitions,
      topicConfiguration: { 'retention.ms': retentionMs, 'cleanup.policy': ['delete'] },
      bindingVersion: '0.5.0',
    },
  });
  const channels: Record<string, Json> = {};
  const operations: Record<string, Json> = {};
  for (const t of TOPIC_SPECS) {
    const types = typesOn(t.name);
    channels[t.name] = {
      address: t.name,
      title: t.name,
      description: `Written by ${producersOf(t.name, parties)}; keyed by user id, so one user's events are in order on one partition.`,
      messages: Object.fromEntries(types.map((type) => [type, ref(`components/messages/${type}`)])),
      bindings: kafkaTopic(t.name, t.partitions, t.retentionMs),
    };
    operations[`send-${t.name}`] = {
      action: 'send',
      channel: ref(`channels/${t.name}`),
      summary: `The outbox relay (or the embedded bus) puts the events of ${producersOf(t.name, parties)} here`,
      messages: types.map((type) => ref(`channels/${t.name}/messages/${type}`)),
    };
  }
  for (const { name: target, consumes } of parties) {
    if (!consumes) continue;
    const sub = {
      ...consumes,
      group: consumes.perInstance ? `${consumes.group}-<instance>` : consumes.group,
    };
    for (const topic of sub.topics) {
      operations[`${target}-receives-${topic}`] = {
        action: 'receive',
        channel: ref(`channels/${topic}`),
        summary: `${target} reads ${topic} as consumer group ${sub.group}`,
        messages: typesOn(topic).map((type) => ref(`channels/${topic}/messages/${type}`)),
        bindings: { kafka: { groupId: { type: 'string', const: sub.group }, bindingVersion: '0.5.0' } },
      };
    }
    if (!sub.deadLetters) continue;
    const dlq = dlqTopic(sub.group);
    channels[dlq] = {
      address: dlq,
      title: dlq,
      description: `What ${sub.group} could not handle, with failure headers (taskflow-dlq-*); inspect and replay with \`taskflow dlq\`.`,
      messages: Object.fromEntries(
        [...new Set(sub.topics.flatMap(typesOn))].map((type) => [type, ref(`components/messages/${type}`)]),
      ),
      bindings: kafkaTopic(dlq, DLQ_SPEC.partitions, DLQ_SPEC.retentionMs),
    };
  }
  return {
    asyncapi: '3.1.0',
    info: {
      title: 'Taskflow events',
      version,
      description: `The topics, events and consumer groups of Taskflow. Every event is a CloudEvent 1.0 whose data has a versioned JSON Schema (schemas/events/<type>/v<N>.json, named in ce_dataschema); versions evolve with full compatibility (\`taskflow schemas check\`). ${
        avro
          ? 'This deployment writes data as Avro (EVENT_ENCODING=avro, content-type application/avro) in Confluent framing, with the Avro schemas generated from the JSON Schemas and registered in its schema registry; consumers read JSON and Avro records alike.'
          : 'This deployment writes data as JSON (content-type application/json).'
      }`,
    },
    defaultContentType: contentType,
    servers: {
      kafka: {
        host: 'localhost:9092',
        protocol: 'kafka',
        description:
          'Apache Kafka or Redpanda: set KAFKA_BROKERS; topic names get KAFKA_TOPIC_PREFIX in front',
      },
    },
    channels,
    operations,
    components: { messages },
  };
}
