/**
 * Avro schemas of the event `data`, generated from the JSON Schemas in `schemas.ts` (the single source; there
 * is no hand-written Avro copy), for the Kafka transport's opt-in Avro wire format (EVENT_ENCODING=avro). In
 * the CloudEvents Kafka binding only `data` is the record value; the attributes stay `ce_*` headers.
 *
 * The mapping: an object is a record (an optional field is a union with null, default null), an `enum` an Avro
 * enum, a `const` or any string a string (formats are kept as text, so instants round-trip to the same
 * characters), an integer a long, `anyOf [X, null]` the union [null, X], and the task schema one named record
 * defined once per event schema. Any other keyword is refused at generation, naming where: a new construct in
 * a JSON Schema needs a decision here, not a silent guess.
 */
import { EVENT_TYPES, isEventType, taskSchema, type EventType } from './schemas.ts';

export const AVRO_NAMESPACE = 'taskflow.events';
/** The content-type of a Kafka record whose value is Avro in Confluent framing (ADR 0013). */
export const AVRO_CONTENT_TYPE = 'application/avro';
/** The AsyncAPI schemaFormat of an Avro schema (avsc reads Avro 1.x; 1.9.0 names the specification). */
export const AVRO_SCHEMA_FORMAT = 'application/vnd.apache.avro+json;version=1.9.0';

type Json = Record<string, unknown>;
export type AvroSchema = string | Json | AvroSchema[];

const pascal = (s: string) =>
  s
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');

/** The Avro record name of `type`'s data: task.created -> TaskCreated. */
export const avroRecordName = (type: EventType) => pascal(type);
/** The full name (namespace.name), which names the registry subject (TopicRecordNameStrategy). */
export const avroFullName = (type: EventType) => `${AVRO_NAMESPACE}.${avroRecordName(type)}`;

const dataSchemaOf = (type: EventType): Json =>
  (EVENT_TYPES[type].schema.properties as unknown as Json).data as Json;

const isNull = (s: Json) => s.type === 'null';

/** The Avro schema of `type`'s `data`, as the JSON a registry stores. */
export function avroSchemaOf(type: EventType): Json {
  const defined = new Set<string>();
  const convert = (node: Json, name: string, at: string): AvroSchema => {
    if (node.$ref !== undefined) {
      if (node.$ref !== taskSchema.$id)
        throw new Error(`${at}: $ref ${String(node.$ref)} has no Avro mapping`);
      if (defined.has('Task')) return 'Task';
      defined.add('Task');
      return convert(taskSchema as unknown as Json, 'Task', at);
    }
    if (Array.isArray(node.anyOf)) {
      const branches = node.anyOf as Json[];
      const other = branches.filter((b) => !isNull(b));
      if (branches.length !== 2 || other.length !== 1)
        throw new Error(`${at}: only anyOf [X, null] has an Avro mapping`);
      return ['null', convert(other[0]!, name, at)];
    }
    if (Array.isArray(node.enum)) {
      const symbols = node.enum as unknown[];
      if (!symbols.every((s) => typeof s === 'string'))
        throw new Error(`${at}: only string enums have an Avro mapping`);
      defined.add(name);
      return { type: 'enum', name, symbols };
    }
    if (typeof node.const === 'string') return 'string';
    switch (node.type) {
      case 'string':
        return 'string';
      case 'integer':
        return 'long';
      case 'number':
        return 'double';
      case 'boolean':
        return 'boolean';
      case 'null':
        return 'null';
      case 'array':
        return { type: 'array', items: convert(node.items as Json, `${name}Item`, `${at}/items`) };
      case 'object': {
        const properties = (node.properties ?? {}) as Record<string, Json>;
        if (!Object.keys(properties).length)
          throw new Error(`${at}: an object without properties has no Avro mapping`);
        const required = new Set((node.required ?? []) as string[]);
        defined.add(name);
        return {
          type: 'record',
          name,
          fields: Object.entries(properties).map(([field, schema]) => {
            const type = convert(schema, `${name}${pascal(field)}`, `${at}/${field}`);
            if (required.has(field)) return { name: field, type };
            // Optional: absent is null (a union already holding null keeps it first, for the default).
            return {
              name: field,
              type: Array.isArray(type) && type[0] === 'null' ? type : ['null', type],
              default: null,
            };
          }),
        };
      }
      default:
        throw new Error(`${at}: ${JSON.stringify(node).slice(0, 80)} has no Avro mapping`);
    }
  };
  const record = convert(dataSchemaOf(type), avroRecordName(type), `${type}/data`) as Json;
  return { ...record, namespace: AVRO_NAMESPACE };
}

/**
 * Decoded Avro data as the JSON the event schema describes: plain objects, and an optional field that was
 * absent (decoded as null) absent again unless its JSON Schema allows null.
 */
export function jsonDataOf(type: string, value: unknown): unknown {
  const walk = (node: Json | undefined, v: unknown): unknown => {
    if (v === null || typeof v !== 'object') return v;
    // The union first, then the reference: `previous` is anyOf [$ref task, null], whose non-null branch is the
    // $ref (resolved the other way round, a previous task lost its optional fields' nulls and was invalid).
    if (node && Array.isArray(node.anyOf)) node = (node.anyOf as Json[]).find((b) => !isNull(b));
    if (node?.$ref === taskSchema.$id) node = taskSchema as unknown as Json;
    if (Array.isArray(v)) return v.map((item) => walk(node?.items as Json | undefined, item));
    const properties = (node?.properties ?? {}) as Record<string, Json>;
    const required = new Set((node?.required ?? []) as string[]);
    const out: Json = {};
    for (const [k, item] of Object.entries(v)) {
      const schema = properties[k];
      const nullable = !!schema && Array.isArray(schema.anyOf) && (schema.anyOf as Json[]).some(isNull);
      if (item === null && !required.has(k) && !nullable) continue;
      out[k] = walk(schema, item);
    }
    return out;
  };
  return walk(isEventType(type) ? dataSchemaOf(type) : undefined, value);
}
