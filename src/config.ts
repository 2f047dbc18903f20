/**
 * Configuration comes only from the environment (twelve-factor); every variable is listed in the README.
 * Secrets are never logged.
 */
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { RetryPolicy } from './retry.ts';
import { DLQ_SPEC, TOPIC_SPECS } from './contracts/topics.ts';
import { COMPATIBILITY_LEVELS, type CompatibilityLevel } from './contracts/schema-compat.ts';
import { DEFAULT_REMINDER_GRACE_MS } from './domain/reminders.ts';
import { isPostgresUrl, pgliteLocation } from './store/database-url.ts';
import { canonicalTimeZone, isTimeZone } from './domain/time.ts';
import type { LogFormat } from './observability/logger.ts';
import { credentialsOutOf, passwordCutShort } from './url-credentials.ts';

export type BusKind = 'embedded' | 'kafka' | 'dapr';

export interface Config {
  /** What the settings allow but a start should say (logged as warnings when the process starts). */
  warnings: readonly string[];
  databaseUrl: string;
  bus: BusKind;
  host: string;
  port: number;
  /** PUBLIC_URL without a trailing slash, or null when unset (then nothing links to a guessed address). */
  publicUrl: string | null;
  /**
   * Where this process reaches the deployment's HTTP API, for MCP tools whose target runs in another process:
   * INTERNAL_URL, else PUBLIC_URL (a split deployment whose public address does not resolve inside it, as
   * compose's `localhost`, sets INTERNAL_URL to its router).
   */
  apiUrl: string | null;
  logLevel: string;
  /** LOG_FORMAT; unset: pretty on a terminal, JSON otherwise (observability/logger.ts). */
  logFormat?: LogFormat;
  jwt: {
    secret?: string;
    jwksUrl?: string;
    issuer?: string;
    audience?: string;
    /** The development secret's file (next to the PGlite data); null: made for this process (memory://). */
    devSecretFile?: string | null;
  };
  defaultTimezone: string;
  retry: RetryPolicy;
  rateLimitPerMinute: number;
  /** Admission control of API requests by the process's event-loop delay (ms, mean over 250 ms); 0: none. */
  maxEventLoopDelayMs: number;
  /** Admission control of API requests by how many are being served at once; 0: none. */
  maxRequestsInFlight: number;
  /**
   * REMINDER_GRACE_MS: a reminder later than this is missed, not fired. Shared: the reminders target fires
   * by it, and the api and recurrence targets tell where a change's reminders went by it.
   */
  reminderGraceMs: number;
  /** How long consumers remember processed event ids (dedupe); past every topic's retention by default. */
  ledgerRetentionMs: number;
  /** Fastify trustProxy: whose X-Forwarded-For to believe for the client IP (rate limits' fallback key, audit). */
  trustProxy: boolean | number | string;
  /** CORS_ORIGINS: browser origins of other sites allowed to call the API (empty: none). */
  corsOrigins: string[];
  embedded: { pollIntervalMs: number; heartbeatIntervalMs: number; sessionTimeoutMs: number };
  /** Least time between two batches of a consumer's partition while busy (off the real-time path). */
  consumerBatchIntervalMs: number;
  kafka: {
    brokers: string[];
    clientId: string;
    sasl?: { mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string };
    ssl?: { caFile?: string; certFile?: string; keyFile?: string; rejectUnauthorized: boolean };
    ensureTopics: boolean;
    topicPrefix: string;
    topicPartitions?: number;
    /** KAFKA_TOPIC_RETENTION_MS: retention per topic name (`dlq`: every dead-letter topic), for new topics. */
    topicRetentionMs: Record<string, number>;
    replicationFactor: number;
  };
  /**
   * EVENT_ENCODING: how the Kafka transport writes event data, `json` (default) or `avro` (Confluent framing,
   * needs BUS=kafka and SCHEMA_REGISTRY_URL). Readers take both whatever this says.
   */
  eventEncoding: 'json' | 'avro';
  /** SCHEMA_REGISTRY_*: a Confluent-compatible registry the event schemas are registered with at start-up. */
  schemaRegistry?: {
    url: string;
    username?: string;
    password?: string;
    compatibility: CompatibilityLevel;
  };
  /** kafkaAdmin: KAFKA_BROKERS is set, so topics, lag and dead letters are read from the brokers behind Dapr. */
  dapr: { httpPort: number; pubsubName: string; kafkaAdmin: boolean; apiToken?: string; appToken?: string };
  /**
   * The environment this was read from: each target reads its own section from it (its manifest's
   * `config`), checked at start-up with the rest.
   */
  env: Env;
}

/** Environment variables, as `process.env`. */
export type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * TRUST_PROXY: unset or `false` (the client is the socket's peer), `true` (believe any X-Forwarded-For; only
 * when nothing but a proxy can reach the port), a hop count (`1`: one proxy in front, e.g. the ingress) or a
 * comma-separated list of proxy addresses/CIDRs.
 */
function trustProxy(raw: string | undefined): boolean | number | string {
  const v = (raw ?? '').trim();
  if (v === '' || v === 'false') return false;
  if (v === 'true') return true;
  if (/^\d+$/.test(v)) return Number(v);
  if (/^[0-9a-fA-F.:/]+(\s*,\s*[0-9a-fA-F.:/]+)*$/.test(v)) return v;
  throw new ConfigError(
    `TRUST_PROXY must be true, false, a hop count or a comma-separated list of addresses/CIDRs, got "${v}"`,
  );
}

/**
 * CORS_ORIGINS: origins (`https://app.example.com`, scheme, host and port, no path) joined by commas. A browser
 * app served from another site calls the API with a bearer token; `*` is refused (say which sites may).
 */
function corsOrigins(raw: string | undefined): string[] {
  const origins = (raw ?? '')
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  for (const o of origins) {
    let url: URL | null = null;
    try {
      url = new URL(o);
    } catch {
      /* refused below */
    }
    if (!url || !/^https?:$/.test(url.protocol) || url.origin !== o.replace(/\/$/, ''))
      throw new ConfigError(
        `CORS_ORIGINS must be origins such as https://app.example.com (scheme, host, port; no path; no *), joined by commas, got "${o}"`,
      );
  }
  return origins.map((o) => o.replace(/\/$/, ''));
}

/** `task-events=2592000000,dlq=604800000`: the topics of docs/architecture.md section 3, and `dlq` for all DLQs. */
function retentionOverrides(raw: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  const names = [...TOPIC_SPECS.map((t) => t.name), 'dlq'];
  for (const part of (raw ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [name, value] = part.split('=').map((s) => s.trim());
    if (!name || !names.includes(name) || !value || !/^\d+$/.test(value) || Number(value) < 60_000)
      throw new ConfigError(
        `KAFKA_TOPIC_RETENTION_MS must be a list like task-events=2592000000,dlq=604800000 (topics: ${names.join(', ')}; at least 60000 ms), got "${part}"`,
      );
    out[name] = Number(value);
  }
  return out;
}

/** The longest delay a Node timer takes (2^31 - 1 ms). */
export const TIMER_MAX_MS = 2_147_483_647;

/** A TCP port (`min` 0 lets the system pick one). */
const port = (env: Env, key: string, def: number, min = 0): number => {
  const n = int(env, key, def, min);
  if (n > 65_535) throw new ConfigError(`${key} must be a TCP port from ${min} to 65535, got "${env[key]}"`);
  return n;
};

/**
 * An integer variable: `def` when unset or empty, a ConfigError below `min`, above `max` or not an integer.
 * A delay in ms that becomes a timer's passes TIMER_MAX_MS as its `max`: Node runs a longer timer at once, so a
 * retention interval of 3,000,000,000 purged in a tight loop.
 */
export const int = (env: Env, key: string, def: number, min = 0, max = Infinity): number => {
  const raw = env[key];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw new ConfigError(`${key} must be an integer >= ${min}, got "${raw}"`);
  if (n > max)
    throw new ConfigError(
      `${key} must be at most ${max}${max === TIMER_MAX_MS ? ' (about 24.8 days, the longest timer)' : ''}, got "${raw}"`,
    );
  return n;
};

/**
 * The most partitions KAFKA_TOPIC_PARTITIONS gives a topic. A partition is never taken away (the embedded bus
 * only adds them; Kafka cannot remove them), and each costs every process that reads the topic: on the
 * embedded bus `taskflow up` on 1,024 per topic took 26 s to be ready (5.6 s on 3), peaked at 500 MB and spent
 * a third of a core idle (on 256: 13 s, 310 MB, 15 %); 100,000 was not ready after 213 s at 2.5 GB. On Kafka a
 * group reads in parallel on at most as many consumers as partitions: 256 is more than any deployment runs.
 */
export const MAX_TOPIC_PARTITIONS = 256;

const topicPartitions = (env: Env): number => {
  const raw = env.KAFKA_TOPIC_PARTITIONS ?? '';
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n < 1 || n > MAX_TOPIC_PARTITIONS)
    throw new ConfigError(
      `KAFKA_TOPIC_PARTITIONS must be a whole number from 1 to ${MAX_TOPIC_PARTITIONS} (a topic's partitions are never fewer again: each costs every process that reads it), got "${raw}"`,
    );
  return n;
};

/** A `true`/`false` variable: `def` when unset or empty, a ConfigError for anything else (`yes` read as false). */
export const bool = (env: Env, key: string, def: boolean): boolean => {
  const raw = env[key];
  if (raw === undefined || raw === '') return def;
  if (raw === 'true' || raw === 'false') return raw === 'true';
  throw new ConfigError(`${key} must be true or false, got "${raw}"`);
};

/**
 * `raw` as an error may quote it: the password of a `scheme://user:password@host` (or `user:password@host`)
 * masked, as far as the last `@` (a password with an unescaped `@` or `/`, which is what makes a URL refused).
 * The CLI prints these errors, and a platform's logs keep them.
 */
export const quotedSecretly = (raw: string): string =>
  `"${raw.replace(/^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^:/?#@\s]*:)\S*@/, '$1***@')}"`;

/**
 * The embedded bus's consumer timings. A member's partition leases run a session from each heartbeat: a session
 * under two heartbeats let them lapse between heartbeats, and the workers stopped and started over and over.
 */
function embeddedTimings(env: Env): Config['embedded'] {
  const heartbeatIntervalMs = int(env, 'EMBEDDED_HEARTBEAT_MS', 2000, 10, TIMER_MAX_MS);
  const sessionTimeoutMs = int(env, 'EMBEDDED_SESSION_TIMEOUT_MS', 10_000, 50, TIMER_MAX_MS);
  if (sessionTimeoutMs < 2 * heartbeatIntervalMs)
    throw new ConfigError(
      `EMBEDDED_SESSION_TIMEOUT_MS (${sessionTimeoutMs}) must be at least twice EMBEDDED_HEARTBEAT_MS (${heartbeatIntervalMs}): a consumer's partition leases would lapse between its heartbeats`,
    );
  return {
    pollIntervalMs: int(env, 'EMBEDDED_POLL_MS', 2000, 1, TIMER_MAX_MS),
    heartbeatIntervalMs,
    sessionTimeoutMs,
  };
}

/** KAFKA_BROKERS: `host:port` pairs joined by commas (an IPv6 host in brackets). */
function kafkaBrokers(raw: string | undefined): string[] {
  const brokers = (raw || '127.0.0.1:9092')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const b of brokers) {
    const m = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(b);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65_535)
      throw new ConfigError(
        `KAFKA_BROKERS must be host:port pairs joined by commas (e.g. kafka-0:9092,kafka-1:9092), got ${quotedSecretly(b)}`,
      );
  }
  if (brokers.length === 0)
    throw new ConfigError(`KAFKA_BROKERS must name at least one host:port, got ${quotedSecretly(raw ?? '')}`);
  return brokers;
}

/**
 * KAFKA_TOPIC_PREFIX: what Kafka takes in a topic name (letters, digits, `.`, `_`, `-`), short enough for the
 * longest topic it prefixes (a consumer group's dead-letter topic) to stay within Kafka's 249 characters.
 */
function topicPrefix(raw: string | undefined): string {
  const prefix = raw ?? '';
  if (!/^[A-Za-z0-9._-]*$/.test(prefix) || prefix.length > 100)
    throw new ConfigError(
      `KAFKA_TOPIC_PREFIX may hold only letters, digits, ".", "_" and "-" (at most 100), got "${prefix}"`,
    );
  return prefix;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
function logLevel(raw: string | undefined): string {
  if (!raw) return 'info';
  if (!LOG_LEVELS.includes(raw))
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${raw}"`);
  return raw;
}

/** DEFAULT_TIMEZONE: an IANA zone, as IANA spells it (`europe/paris` is `Europe/Paris`). */
function defaultTimeZone(raw: string | undefined): string {
  if (!raw) return 'UTC';
  // An offset (+02:00) is no zone a user could set (it follows no daylight saving time): refused as there.
  const zone = isTimeZone(raw) ? canonicalTimeZone(raw) : null;
  if (!zone)
    throw new ConfigError(`DEFAULT_TIMEZONE must be an IANA time zone such as Europe/Paris, got "${raw}"`);
  return zone;
}

export const DEFAULT_DATABASE_URL = '.data/db';

const LOG_FORMATS = ['json', 'pretty'] as const satisfies readonly LogFormat[];
function logFormat(raw: string): LogFormat {
  const format = LOG_FORMATS.find((f) => f === raw);
  if (!format) throw new ConfigError(`LOG_FORMAT must be json or pretty, got "${raw}"`);
  return format;
}

/** Checked at start: a URL `new URL` refused was "Invalid URL" after the database was opened and migrated. */
function jwksUrlOf(raw: string): string {
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    // named below
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:'))
    throw new ConfigError(
      `JWT_JWKS_URL must be an http(s) URL such as https://idp.example.com/.well-known/jwks.json, got "${raw}"`,
    );
  return raw;
}

/**
 * SCHEMA_REGISTRY_URL, and the registry's Basic auth: SCHEMA_REGISTRY_USERNAME/PASSWORD, or the user and
 * password of the URL (`https://user:secret@registry`, as hosted registries hand it out), moved out of it. fetch
 * refuses a URL with credentials, and the start failed with the URL, password and all, in its message; the
 * URL is also logged once the schemas are registered.
 */
function schemaRegistryOf(env: Env): NonNullable<Config['schemaRegistry']> {
  const raw = env.SCHEMA_REGISTRY_URL!;
  let parsed: URL | undefined;
  try {
    parsed = new URL(raw);
  } catch {
    // named below
  }
  if (!parsed || !/^https?:$/.test(parsed.protocol) || !/^https?:\/\//i.test(raw) || passwordCutShort(parsed))
    throw new ConfigError(
      `SCHEMA_REGISTRY_URL must be an http(s) URL (characters such as @ : / # in its user or password percent-encoded, @ as %40), got ${quotedSecretly(raw)}`,
    );
  let username = env.SCHEMA_REGISTRY_USERNAME || undefined;
  let password = env.SCHEMA_REGISTRY_PASSWORD || undefined;
  let url = raw;
  if (parsed.username || parsed.password) {
    let inUrl: ReturnType<typeof credentialsOutOf>;
    try {
      inUrl = credentialsOutOf(parsed);
    } catch {
      throw new ConfigError(
        `SCHEMA_REGISTRY_URL has a user or password that is not percent-encoded (a % must be written %25), got ${quotedSecretly(raw)}`,
      );
    }
    const differs = (fromUrl: string, fromVariable: string | undefined) =>
      !!fromUrl && fromVariable !== undefined && fromVariable !== fromUrl;
    if (differs(inUrl.username, username) || differs(inUrl.password, password))
      throw new ConfigError(
        'SCHEMA_REGISTRY_URL holds a user and password, and SCHEMA_REGISTRY_USERNAME/SCHEMA_REGISTRY_PASSWORD other ones: give the credentials once',
      );
    username = inUrl.username || username;
    password = inUrl.password || password;
    url = inUrl.href;
  }
  const compatibility = (env.SCHEMA_REGISTRY_COMPATIBILITY ?? 'FULL').toUpperCase();
  if (!(COMPATIBILITY_LEVELS as readonly string[]).includes(compatibility))
    throw new ConfigError(
      `SCHEMA_REGISTRY_COMPATIBILITY must be one of ${COMPATIBILITY_LEVELS.join(', ')}, got "${env.SCHEMA_REGISTRY_COMPATIBILITY}"`,
    );
  return {
    url,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    compatibility: compatibility as CompatibilityLevel,
  };
}

function eventEncodingOf(env: Env, bus: BusKind): Config['eventEncoding'] {
  const encoding = (env.EVENT_ENCODING || 'json').toLowerCase();
  if (encoding !== 'json' && encoding !== 'avro')
    throw new ConfigError(`EVENT_ENCODING must be json or avro, got "${env.EVENT_ENCODING}"`);
  if (encoding === 'avro' && bus !== 'kafka')
    throw new ConfigError(
      `EVENT_ENCODING=avro is for BUS=kafka (Dapr and the embedded bus carry JSON), got BUS=${bus}`,
    );
  if (encoding === 'avro' && !env.SCHEMA_REGISTRY_URL)
    throw new ConfigError(
      'EVENT_ENCODING=avro needs SCHEMA_REGISTRY_URL (the Avro schema ids come from the registry)',
    );
  return encoding;
}

/**
 * An http(s) base URL without its trailing slash, or null when unset. `{target}` (INTERNAL_URL only) stands for
 * the name of the target that serves a route (mcp-rest.ts): checked with a name in its place.
 */
function baseUrl(env: Env, name: string, opts: { target?: boolean } = {}): string | null {
  const value = env[name];
  if (!value) return null;
  let url: URL | undefined;
  try {
    url = new URL(opts.target ? value.replaceAll('{target}', 'reminders') : value);
  } catch {
    url = undefined;
  }
  const placeholder = !opts.target && value.includes('{target}');
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.search || url.hash || placeholder)
    throw new ConfigError(
      `${name} must be an http(s) base URL such as https://tasks.example.com${opts.target ? ' (or http://taskflow-{target}:3000 for each target its own)' : ''}, got "${value}"`,
    );
  return value.replace(/\/+$/, '');
}

/**
 * DATABASE_URL: `postgres://` or `postgresql://` (any case), `memory://`, `file://<dir>` or a directory. Any
 * other `scheme://` (a typo, a leading space, another database) is refused: taken as a directory, it became a
 * new, empty local database, and `migrate` said "up to date".
 */
export function databaseUrlOf(env: Env): string {
  const raw = env.DATABASE_URL;
  if (!raw) return DEFAULT_DATABASE_URL;
  const expected = 'DATABASE_URL must be postgres://…, memory://, or a directory (or file://<directory>)';
  if (raw.trim() !== raw)
    throw new ConfigError(`${expected}, got ${quotedSecretly(raw)} (white space around it)`);
  // The scheme in lower case: the code after this compares it so.
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw)?.[1]?.toLowerCase();
  const url = scheme ? scheme + raw.slice(scheme.length) : raw;
  if (scheme === 'postgres' || scheme === 'postgresql') {
    // libpq's socket form has no host (postgres://user@/db?host=/run/postgresql), which URL refuses.
    if (!URL.canParse(url) && !URL.canParse(url.replace('@/', '@localhost/')))
      throw new ConfigError(`DATABASE_URL is not a valid URL: ${quotedSecretly(raw)}`);
    return url;
  }
  if (url === 'memory://') return url;
  if (scheme && scheme !== 'file') throw new ConfigError(`${expected}, got ${quotedSecretly(raw)}`);
  const dir = pgliteLocation(url);
  let isDirectory: boolean | undefined;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch {
    // Not there yet: made at the first start.
  }
  if (isDirectory === false) throw new ConfigError(`DATABASE_URL names ${dir}, which is not a directory`);
  return url;
}

/** A file a variable names, readable by this process (a TLS certificate or key). */
function readableFile(env: Env, key: string): string | undefined {
  const file = env[key];
  if (!file) return undefined;
  try {
    accessSync(file, constants.R_OK);
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${file} (${(err as { code?: string }).code ?? 'error'})`);
  }
  return file;
}

export function loadConfig(
  env: Env = process.env,
  /**
   * `auth: false`: a command that verifies and signs no token (migrate, the bus's operations) needs no secret.
   * `devSecret: 'existing'`: the development secret must be there already (`taskflow token`: one made now
   * would sign tokens no server checks with).
   */
  opts: { auth?: boolean; devSecret?: 'existing' } = {},
): Config {
  const databaseUrl = databaseUrlOf(env);
  const bus = (env.BUS || 'embedded') as BusKind;
  if (!['embedded', 'kafka', 'dapr'].includes(bus))
    throw new ConfigError(`BUS must be embedded, kafka or dapr, got "${bus}"`);
  const listenPort = port(env, 'PORT', 3000);
  const host = env.HOST || '127.0.0.1';
  const mech = env.KAFKA_SASL_MECHANISM?.toUpperCase();
  if (mech && !['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'].includes(mech))
    throw new ConfigError(
      `KAFKA_SASL_MECHANISM must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got "${mech}"`,
    );
  // Each of them signs in a user with a password: without them the client signed in as '' with '', the broker
  // refused every connection, and the start had said nothing.
  const saslMissing = mech ? ['KAFKA_SASL_USERNAME', 'KAFKA_SASL_PASSWORD'].filter((key) => !env[key]) : [];
  if (saslMissing.length > 0)
    throw new ConfigError(`KAFKA_SASL_MECHANISM=${mech} needs ${saslMissing.join(' and ')} (unset or empty)`);
  // Unset: on when a CA file or SASL asks for it; `false` turns it off even then.
  const sslOn = bool(env, 'KAFKA_SSL', !!env.KAFKA_SSL_CA_FILE || !!mech);
  const topicRetentionMs = retentionOverrides(env.KAFKA_TOPIC_RETENTION_MS);
  // A processed event id is needed as long as a copy of the event can be delivered: its topic's retention
  // (a dead letter replayed goes back to its topic), plus a day.
  const longestRetentionMs = Math.max(
    ...TOPIC_SPECS.map((t) => topicRetentionMs[t.name] ?? t.retentionMs),
    topicRetentionMs.dlq ?? DLQ_SPEC.retentionMs,
  );
  const maxDelayMs = int(env, 'CONSUMER_RETRY_MAX_MS', 10_000, 0, TIMER_MAX_MS);
  const retry = {
    maxAttempts: int(env, 'CONSUMER_MAX_ATTEMPTS', 5, 1),
    // Unset, within a shorter CONSUMER_RETRY_MAX_MS (100, or 0 for no wait, as every wait is capped by it).
    baseDelayMs: int(env, 'CONSUMER_RETRY_BASE_MS', Math.min(200, maxDelayMs), 0, TIMER_MAX_MS),
    maxDelayMs,
  };
  if (retry.baseDelayMs > retry.maxDelayMs)
    throw new ConfigError(
      `CONSUMER_RETRY_BASE_MS (${retry.baseDelayMs}) must not be more than CONSUMER_RETRY_MAX_MS (${retry.maxDelayMs}): the first retry's wait would be over the longest`,
    );
  const ledgerRetentionMs = int(env, 'LEDGER_RETENTION_MS', longestRetentionMs + 24 * 3_600_000, 60_000);
  const warnings = [
    // Without an audience, any token the provider signs is taken as an API token: one it made for another
    // application of the same provider (an ID token, another API's) too.
    ...(env.JWT_JWKS_URL && !env.JWT_AUDIENCE
      ? [
          "JWT_JWKS_URL without JWT_AUDIENCE: any token the identity provider signs, for any application, is accepted; set JWT_AUDIENCE to the audience it puts in this API's tokens",
        ]
      : []),
    ...(ledgerRetentionMs < longestRetentionMs
      ? [
          `LEDGER_RETENTION_MS (${ledgerRetentionMs}) is shorter than the longest topic retention (${longestRetentionMs} ms, dead letters included): a copy of an event delivered after its id is forgotten (a redelivery, a dead letter replayed) is applied again`,
        ]
      : []),
  ];
  const config: Config = {
    warnings,
    databaseUrl,
    bus,
    host,
    port: listenPort,
    publicUrl: baseUrl(env, 'PUBLIC_URL'),
    apiUrl: baseUrl(env, 'INTERNAL_URL', { target: true }) ?? baseUrl(env, 'PUBLIC_URL'),
    logLevel: logLevel(env.LOG_LEVEL),
    ...(env.LOG_FORMAT ? { logFormat: logFormat(env.LOG_FORMAT) } : {}),
    jwt: {
      ...(env.JWT_SECRET ? { secret: env.JWT_SECRET } : {}),
      ...(env.JWT_JWKS_URL ? { jwksUrl: jwksUrlOf(env.JWT_JWKS_URL) } : {}),
      ...(env.JWT_ISSUER ? { issuer: env.JWT_ISSUER } : {}),
      ...(env.JWT_AUDIENCE ? { audience: env.JWT_AUDIENCE } : {}),
    },
    defaultTimezone: defaultTimeZone(env.DEFAULT_TIMEZONE),
    retry,
    rateLimitPerMinute: int(env, 'RATE_LIMIT_PER_MINUTE', 1200),
    maxEventLoopDelayMs: int(env, 'MAX_EVENT_LOOP_DELAY_MS', 25),
    maxRequestsInFlight: int(env, 'MAX_REQUESTS_IN_FLIGHT', 64),
    reminderGraceMs: int(env, 'REMINDER_GRACE_MS', DEFAULT_REMINDER_GRACE_MS),
    ledgerRetentionMs,
    trustProxy: trustProxy(env.TRUST_PROXY),
    corsOrigins: corsOrigins(env.CORS_ORIGINS),
    embedded: embeddedTimings(env),
    consumerBatchIntervalMs: int(env, 'CONSUMER_BATCH_INTERVAL_MS', 200, 0, TIMER_MAX_MS),
    eventEncoding: eventEncodingOf(env, bus),
    ...(env.SCHEMA_REGISTRY_URL ? { schemaRegistry: schemaRegistryOf(env) } : {}),
    kafka: {
      brokers: kafkaBrokers(env.KAFKA_BROKERS),
      clientId: env.KAFKA_CLIENT_ID || 'taskflow',
      ...(mech
        ? {
            sasl: {
              mechanism: mech as 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512',
              username: env.KAFKA_SASL_USERNAME!,
              password: env.KAFKA_SASL_PASSWORD!,
            },
          }
        : {}),
      ...(sslOn
        ? {
            ssl: {
              ...(env.KAFKA_SSL_CA_FILE ? { caFile: readableFile(env, 'KAFKA_SSL_CA_FILE') } : {}),
              ...(env.KAFKA_SSL_CERT_FILE ? { certFile: readableFile(env, 'KAFKA_SSL_CERT_FILE') } : {}),
              ...(env.KAFKA_SSL_KEY_FILE ? { keyFile: readableFile(env, 'KAFKA_SSL_KEY_FILE') } : {}),
              rejectUnauthorized: bool(env, 'KAFKA_SSL_REJECT_UNAUTHORIZED', true),
            },
          }
        : {}),
      ensureTopics: bool(env, 'KAFKA_ENSURE_TOPICS', true),
      topicPrefix: topicPrefix(env.KAFKA_TOPIC_PREFIX),
      ...(env.KAFKA_TOPIC_PARTITIONS ? { topicPartitions: topicPartitions(env) } : {}),
      topicRetentionMs,
      replicationFactor: int(env, 'KAFKA_REPLICATION_FACTOR', 1, 1),
    },
    dapr: {
      httpPort: port(env, 'DAPR_HTTP_PORT', 3500, 1),
      pubsubName: env.DAPR_PUBSUB_NAME || 'pubsub-kafka',
      kafkaAdmin: !!env.KAFKA_BROKERS,
      ...(env.DAPR_API_TOKEN ? { apiToken: env.DAPR_API_TOKEN } : {}),
      ...(env.APP_API_TOKEN ? { appToken: env.APP_API_TOKEN } : {}),
    },
    env,
  };
  if (!config.jwt.secret && !config.jwt.jwksUrl && opts.auth !== false) {
    // Development default: a random secret kept next to the embedded database so `taskflow token` and the
    // server agree across restarts; for a database in memory, one for this process, gone with its data.
    // Production sets JWT_SECRET or JWT_JWKS_URL.
    if (isPostgresUrl(databaseUrl))
      throw new ConfigError('set JWT_SECRET (HS256 shared secret) or JWT_JWKS_URL');
    config.jwt.devSecretFile = databaseUrl === 'memory://' ? null : devSecretFile(databaseUrl);
    if (opts.devSecret === 'existing' && config.jwt.devSecretFile && !existsSync(config.jwt.devSecretFile))
      throw new ConfigError(
        `no development secret at ${config.jwt.devSecretFile}: taskflow makes it when it first starts on this DATABASE_URL (${pgliteLocation(databaseUrl)}), and a token signed with another would be refused. Check DATABASE_URL (and the directory you run this in), start taskflow there first, or set JWT_SECRET as the server has it`,
      );
    config.jwt.secret =
      config.jwt.devSecretFile === null
        ? randomBytes(32).toString('base64url')
        : devSecret(config.jwt.devSecretFile);
  }
  if (config.jwt.secret && Buffer.byteLength(config.jwt.secret) < 32)
    throw new ConfigError('JWT_SECRET must be at least 32 bytes for HS256');
  return config;
}

/**
 * Where the development secret of a data directory is kept: `<dir>.dev-jwt-secret` beside it, one per directory
 * (directories side by side, in /tmp say, shared one: a token of one instance was good for the others). Where an
 * earlier version made one in the parent (`dev-jwt-secret`, `.data/dev-jwt-secret` for the default) and it is
 * this user's, that one is kept: its tokens and signed-in boards go on working. The path alone decides, not the
 * working directory.
 */
function devSecretFile(databaseUrl: string): string {
  const dir = pgliteLocation(databaseUrl);
  const earlier = join(dirname(dir), 'dev-jwt-secret');
  try {
    if (lstatSync(earlier).uid === process.getuid?.()) return earlier;
  } catch {
    // None made there.
  }
  return join(dirname(dir), `${basename(dir)}.dev-jwt-secret`);
}

/**
 * The development secret kept at `file`: made there if missing (O_EXCL: never written through a link someone
 * put there), else read, once it is a regular file of this user that no other user can read or write. A
 * secret someone else planted (a shared directory such as /tmp) would let them sign tokens for any user.
 */
function devSecret(file: string): string {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString('base64url');
  try {
    writeFileSync(file, secret + '\n', { mode: 0o600, flag: 'wx' });
    return secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(file);
  const fix = `delete it to have a new one made, or set JWT_SECRET`;
  if (!st.isFile())
    throw new ConfigError(`the development secret ${file} is not a regular file (a link?): ${fix}`);
  if (process.platform !== 'win32') {
    if (typeof process.getuid === 'function' && st.uid !== process.getuid())
      throw new ConfigError(`the development secret ${file} belongs to another user: ${fix}`);
    if (st.mode & 0o077)
      throw new ConfigError(
        `the development secret ${file} can be read or written by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it, or ${fix}`,
      );
  }
  const kept = readFileSync(file, 'utf8').trim();
  if (Buffer.byteLength(kept) < 32)
    throw new ConfigError(`the development secret ${file} is shorter than 32 bytes: ${fix}`);
  return kept;
}
