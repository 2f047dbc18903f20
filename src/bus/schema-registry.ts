/**
 * A Confluent-compatible schema registry (Confluent Schema Registry, Redpanda's built-in registry, Apicurio's
 * `ccompat` API, Karapace) over its REST API. With SCHEMA_REGISTRY_URL set, a process registers the current
 * version of every event schema at start-up, under the subject `<prefix><topic>-<event type>` (the
 * TopicRecordNameStrategy: a topic carries several event types), with the configured compatibility level; a
 * schema the registry finds incompatible stops the start with one line naming the subject and the reason.
 * With EVENT_ENCODING=avro each type's Avro schema is registered too, under `<prefix><topic>-<record full
 * name>` (ADR 0013). Schemas are looked up by id with a cache (ids never change meaning in a registry).
 */
import type { CompatibilityLevel } from '../contracts/schema-compat.ts';
import { avroFullName, avroSchemaOf } from '../contracts/avro.ts';
import { EVENT_TYPES, publishedSchema, schemaVersionOf, type EventType } from '../contracts/schemas.ts';
import { eachLimited } from '../each-limited.ts';
import { errorMessage } from '../error-text.ts';
import { credentialsOutOf } from '../url-credentials.ts';

export interface RegistrySettings {
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  compatibility: CompatibilityLevel;
  /** Per request (default 10 s). */
  timeoutMs?: number;
}

export class RegistryError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** A schema the registry refuses (incompatible or invalid): the process does not start. */
export class SchemaRefusedError extends Error {
  override name = 'SchemaRefusedError';
}

const CONTENT_TYPE = 'application/vnd.schemaregistry.v1+json';

/** The schema languages Taskflow registers: JSON Schema (the contract) and Avro (EVENT_ENCODING=avro). */
export type SchemaType = 'JSON' | 'AVRO';

/**
 * The registry's base URL without a user and password, and its credentials: the settings', else the URL's
 * (percent-decoded). fetch refuses a URL with credentials, and the errors below quote the URL: its password was
 * printed at start, twice (loadConfig moves them out of SCHEMA_REGISTRY_URL; this holds for any caller).
 */
function endpointOf(s: RegistrySettings): { base: string; username?: string; password?: string } {
  const base = s.url.replace(/\/+$/, '');
  const given = {
    ...(s.username !== undefined ? { username: s.username } : {}),
    ...(s.password !== undefined ? { password: s.password } : {}),
  };
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    return { base, ...given };
  }
  if (!url.username && !url.password) return { base, ...given };
  let inUrl: ReturnType<typeof credentialsOutOf>;
  try {
    inUrl = credentialsOutOf(url);
  } catch {
    throw new Error(
      'the schema registry URL has a user or password that is not percent-encoded (a % must be written %25)',
    );
  }
  return {
    base: inUrl.href.replace(/\/+$/, ''),
    ...(given.username !== undefined ? given : { username: inUrl.username, password: inUrl.password }),
  };
}

export class SchemaRegistryClient {
  private readonly byId = new Map<number, Promise<{ schema: string; schemaType: string }>>();
  private readonly base: string;
  private readonly auth: string | undefined;

  constructor(private readonly s: RegistrySettings) {
    const { base, username, password } = endpointOf(s);
    this.base = base;
    this.auth =
      username !== undefined
        ? `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`
        : undefined;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.base}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          accept: CONTENT_TYPE,
          ...(body === undefined ? {} : { 'content-type': CONTENT_TYPE }),
          ...(this.auth ? { authorization: this.auth } : {}),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.s.timeoutMs ?? 10_000),
      });
    } catch (err) {
      throw new RegistryError(0, undefined, `schema registry ${url} unreachable: ${errorMessage(err)}`);
    }
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      // a proxy's HTML error page: reported by status below
    }
    if (!res.ok) {
      const code = typeof json.error_code === 'number' ? json.error_code : undefined;
      const message = typeof json.message === 'string' ? json.message : text.slice(0, 200);
      throw new RegistryError(
        res.status,
        code,
        `schema registry ${method} ${path}: ${res.status} ${message}`,
      );
    }
    return json as T;
  }

  setCompatibility(subject: string, level: CompatibilityLevel): Promise<unknown> {
    return this.call('PUT', `/config/${encodeURIComponent(subject)}`, { compatibility: level });
  }

  /** Whether `schema` may be registered under `subject` (true for a subject with no version yet), and why not. */
  async compatibility(
    subject: string,
    schema: string,
    schemaType: SchemaType = 'JSON',
  ): Promise<{ compatible: boolean; messages: string[] }> {
    try {
      const r = await this.call<{ is_compatible: boolean; messages?: string[] }>(
        'POST',
        `/compatibility/subjects/${encodeURIComponent(subject)}/versions/latest?verbose=true`,
        { schema, schemaType },
      );
      return { compatible: r.is_compatible, messages: r.messages ?? [] };
    } catch (err) {
      // 40401 subject not found, 40402 version not found: nothing to be compatible with yet.
      if (err instanceof RegistryError && err.status === 404) return { compatible: true, messages: [] };
      throw err;
    }
  }

  /** The id of `schema` when it is registered under `subject`, else undefined (one request, no write). */
  async lookup(
    subject: string,
    schema: string,
    schemaType: SchemaType = 'JSON',
  ): Promise<number | undefined> {
    try {
      const r = await this.call<{ id: number }>('POST', `/subjects/${encodeURIComponent(subject)}`, {
        schema,
        schemaType,
      });
      return r.id;
    } catch (err) {
      // 40401 subject not found, 40403 schema not found under it
      if (err instanceof RegistryError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Registers `schema` under `subject` (or finds it registered): its id. */
  async register(subject: string, schema: string, schemaType: SchemaType = 'JSON'): Promise<number> {
    const r = await this.call<{ id: number }>('POST', `/subjects/${encodeURIComponent(subject)}/versions`, {
      schema,
      schemaType,
    });
    return r.id;
  }

  /** The schema with `id`, fetched once per process. */
  schemaById(id: number): Promise<{ schema: string; schemaType: string }> {
    let p = this.byId.get(id);
    if (!p) {
      p = this.call<{ schema: string; schemaType?: string }>('GET', `/schemas/ids/${id}`).then((r) => ({
        schema: r.schema,
        schemaType: r.schemaType ?? 'AVRO',
      }));
      p.catch(() => this.byId.delete(id)); // a failed lookup is tried again next time
      this.byId.set(id, p);
    }
    return p;
  }
}

/** The subject of an event type's JSON Schema (TopicRecordNameStrategy; the type names the record). */
export const subjectOf = (type: EventType, prefix = '') => `${prefix}${EVENT_TYPES[type].topic}-${type}`;
/** The subject of an event type's Avro schema: `<topic>-<record full name>`, as Confluent's serializers name it. */
export const avroSubjectOf = (type: EventType, prefix = '') =>
  `${prefix}${EVENT_TYPES[type].topic}-${avroFullName(type)}`;

/** Subjects registered at once at start-up: a restart is one lookup per subject, a few at a time. */
const CONCURRENT_SUBJECTS = 4;

interface SchemaToRegister {
  type: EventType;
  subject: string;
  schemaType: SchemaType;
  schema: string;
}

/** What a process registers: every event type's JSON Schema, and its Avro schema when it writes Avro. */
function schemasToRegister(prefix: string, avro: boolean): SchemaToRegister[] {
  const types = Object.keys(EVENT_TYPES) as EventType[];
  return [
    ...types.map((type) => ({
      type,
      subject: subjectOf(type, prefix),
      schemaType: 'JSON' as const,
      schema: JSON.stringify(publishedSchema(type)),
    })),
    ...(avro
      ? types.map((type) => ({
          type,
          subject: avroSubjectOf(type, prefix),
          schemaType: 'AVRO' as const,
          schema: JSON.stringify(avroSchemaOf(type)),
        }))
      : []),
  ];
}

/**
 * Registers the current version of every event schema (and of its Avro form with `avro`) and resolves the
 * ids, by subject. A schema already registered under its subject costs one lookup (every restart after the
 * first); a new one sets the subject's compatibility level, asks whether the registry takes it, then
 * registers it. Refuses (SchemaRefusedError, one line) on a schema the registry finds incompatible or invalid.
 */
export async function registerEventSchemas(
  client: SchemaRegistryClient,
  level: CompatibilityLevel,
  prefix = '',
  avro = false,
): Promise<Map<string, number>> {
  const ids = new Map<string, number>();
  await eachLimited(schemasToRegister(prefix, avro), CONCURRENT_SUBJECTS, async (s) => {
    ids.set(s.subject, await registerOne(client, level, s));
  });
  return ids;
}

async function registerOne(
  client: SchemaRegistryClient,
  level: CompatibilityLevel,
  { type, subject, schemaType, schema }: SchemaToRegister,
): Promise<number> {
  const known = await client.lookup(subject, schema, schemaType);
  if (known !== undefined) return known;
  const form = schemaType === 'AVRO' ? ' (Avro)' : '';
  const where = `${type} v${schemaVersionOf(type)}${form} under subject ${subject}`;
  await client.setCompatibility(subject, level);
  const { compatible, messages } = await client.compatibility(subject, schema, schemaType);
  if (!compatible)
    throw new SchemaRefusedError(
      `the schema registry refuses ${where} (${level}): ${messages.join('; ') || 'incompatible with the registered versions'}`,
    );
  try {
    return await client.register(subject, schema, schemaType);
  } catch (err) {
    if (err instanceof RegistryError && (err.status === 409 || err.status === 422))
      throw new SchemaRefusedError(`the schema registry refuses ${where}: ${err.message}`);
    throw err;
  }
}
