/** Starts the real API + relay targets on a random port against a given database. */
import { signDevToken } from '../../src/auth.ts';
import { loadConfig, type Config } from '../../src/config.ts';
import { ManualClock, type Clock } from '../../src/domain/clock.ts';
import { pino } from 'pino';
import { runTargets, type RunningProcess } from '../../src/process.ts';
import { subscribedTopics, type TargetDefinition } from '../../src/runtime.ts';
import { MANIFESTS, findTargets } from '../../src/services/index.ts';
import type { Db, Queryable } from '../../src/store/db.ts';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256!';

export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: 'memory://',
    JWT_SECRET: TEST_SECRET,
    PORT: '0',
    RATE_LIMIT_PER_MINUTE: '0',
    // A loaded test machine lags the event loop; tests of behaviour must not meet admission control's 503s
    // (limits.test.ts turns it on where it is the subject).
    MAX_EVENT_LOOP_DELAY_MS: '0',
    MAX_REQUESTS_IN_FLIGHT: '0',
    EMBEDDED_POLL_MS: '20',
    EMBEDDED_HEARTBEAT_MS: '100',
    EMBEDDED_SESSION_TIMEOUT_MS: '1000',
    RELAY_POLL_MS: '20',
    CONSUMER_RETRY_BASE_MS: '5',
    CONSUMER_RETRY_MAX_MS: '20',
    CONSUMER_MAX_ATTEMPTS: '3',
    ...overrides,
  });
}

export interface TestApp {
  proc: RunningProcess;
  url: string;
  clock: Clock;
  token(user: string): Promise<string>;
  /** fetch with a bearer token for `user`, JSON in and out. */
  call(
    user: string | null,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: any; headers: Headers }>;
  stop(): Promise<void>;
}

export async function startApp(
  db: Db,
  opts: {
    targets?: readonly string[] | TargetDefinition[];
    env?: Record<string, string>;
    clock?: Clock;
  } = {},
): Promise<TestApp> {
  const config = testConfig(opts.env);
  const targets =
    opts.targets && typeof opts.targets[0] !== 'string'
      ? (opts.targets as TargetDefinition[])
      : findTargets((opts.targets as string[] | undefined) ?? ['api']);
  const clock = opts.clock ?? new ManualClock('2026-03-01T12:00:00Z');
  // Errors the server logs are kept, and printed when an answer is a 500: a server failure in a test shows
  // its cause (the answer itself only says "internal error").
  const errors: string[] = [];
  const log = pino({ level: 'error' }, { write: (line: string) => void errors.push(line) });
  const proc = await runTargets(config, targets, { db, log, clock, catalog: MANIFESTS });
  const tokens = new Map<string, string>();
  const token = async (user: string) => {
    if (!tokens.has(user)) tokens.set(user, await signDevToken(TEST_SECRET, user));
    return tokens.get(user)!;
  };
  return {
    proc,
    url: proc.url,
    clock,
    token,
    async call(user, method, path, body, headers = {}) {
      const h: Record<string, string> = { ...headers };
      if (user) h.authorization = `Bearer ${await token(user)}`;
      let payload: string | undefined;
      if (body !== undefined) {
        h['content-type'] ??= 'application/json';
        payload = typeof body === 'string' ? body : JSON.stringify(body);
      }
      const res = await fetch(proc.url + path, {
        method,
        headers: h,
        ...(payload !== undefined ? { body: payload } : {}),
      });
      const text = await res.text();
      if (res.status === 500)
        console.error(`${method} ${path} answered ${res.status}; server errors so far:\n${errors.join('')}`);
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        /* not JSON */
      }
      return { status: res.status, body: parsed, headers: res.headers };
    },
    stop: () => proc.stop(),
  };
}

/**
 * The events the application wrote, in commit order: the outbox's rows (BUS=kafka or dapr, or written by a
 * process without the bus; only those not yet published: the relay deletes what it published, read those
 * from the bus) and the embedded bus's log (BUS=embedded, where writers append to it directly), dead letters
 * left out. `seq` increases in commit order per key: the outbox's per-key stream sequence, or
 * the log offset within the key's partition.
 */
export async function writtenEvents(db: Queryable) {
  const r = await db.query<{ event_type: string; key: string; event: any; seq: string }>(
    `SELECT event_type, key, event, seq FROM (
       SELECT event_type, key, event, stream_seq::text AS seq, created_at, 0 AS src, id AS ord FROM outbox
       UNION ALL
       SELECT value->>'type', key, value, "offset"::text, created_at, 1, "offset" FROM bus_messages
        WHERE topic NOT LIKE '%.dlq') e
     ORDER BY created_at, src, ord`,
  );
  return r.rows;
}

/** How many events the application wrote (see writtenEvents); `q` may be a transaction. */
export async function eventCount(q: Queryable): Promise<number> {
  const r = await q.query<{ n: string }>(
    `SELECT ((SELECT count(*) FROM outbox) + (SELECT count(*) FROM bus_messages WHERE topic NOT LIKE '%.dlq'))::text AS n`,
  );
  return Number(r.rows[0]!.n);
}

/**
 * Waits until every outbox row is on the bus (the relay marks a row published only once it is durable there).
 * On the embedded bus writers append to its log directly and the outbox stays empty: nothing to wait for.
 */
export async function outboxRelayed(db: Queryable, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    async () => (await db.query('SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT 1')).rows.length === 0,
    timeoutMs,
    'the outbox to be relayed',
  );
}

/** Waits until `group` has consumed everything published so far. */
export async function waitCaughtUp(app: TestApp, group: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    async () => {
      // Every partition the group reads: one it never committed on is lag too, not left out.
      const lag = await app.proc.runtime.bus.admin.lag(group, subscribedTopics(MANIFESTS));
      return lag.length > 0 && lag.every((l) => l.lag === 0);
    },
    timeoutMs,
    `consumer group ${group} to catch up`,
  );
}

export async function waitFor<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
