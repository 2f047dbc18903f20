/**
 * One small database seam over two drivers: PostgreSQL (`pg`, production) and PGlite (in-process
 * PostgreSQL compiled to WASM, the embedded default). Both speak the same SQL, so there is one schema and
 * one migration set. `DATABASE_URL` picks the driver: `postgres://…`, a directory path, or `memory://`.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { PGlite as PGliteType } from '@electric-sql/pglite';

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  readonly url: string;
  /** Runs `fn` in one transaction: commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Runs several statements (migrations). */
  exec(sql: string): Promise<void>;
  /** In-process signal of new bus data, so embedded subscribers wake without waiting for their poll. */
  readonly signals: EventEmitter;
  /**
   * Also emits `notifyEvent(channel)` on `signals`, with the payload, for each NOTIFY other processes send on
   * `channel` (PostgreSQL; a dedicated connection, reconnected with backoff; after a reconnect, once with the
   * payload '*', as notifications may have been missed). A no-op on PGlite, which only this process opens.
   */
  listen(channel: string): void;
  close(): Promise<void>;
}

/** The `signals` event a NOTIFY on `channel` becomes (Db.listen). */
export const notifyEvent = (channel: string) => `notify:${channel}`;

/** TCP keep-alive probes after 10 s idle: a peer that vanished in a network partition is noticed. */
const KEEP_ALIVE = { keepAlive: true, keepAliveInitialDelayMillis: 10_000 } as const;

// int8 (bigint) and numeric come back as strings from pg; offsets fit in JS numbers for our purposes, but we
// keep them as strings at the seams that need exactness. Timestamps parse to Date in both drivers.
class PostgresDb implements Db {
  readonly kind = 'postgres' as const;
  readonly signals = new EventEmitter();
  private readonly pool: pg.Pool;
  constructor(
    readonly url: string,
    poolSize: number,
  ) {
    // A bounded wait for a connection, so a database outage fails requests and loops (which retry) instead
    // of queueing them forever.
    this.pool = new pg.Pool({
      connectionString: url,
      max: poolSize,
      connectionTimeoutMillis: 10_000,
      ...KEEP_ALIVE,
    });
    // An idle client error (server restart) must not crash the process; the next query reconnects.
    this.pool.on('error', () => undefined);
    this.signals.setMaxListeners(0);
  }
  async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    const r = await this.pool.query(sql, params as unknown[]);
    return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
  }
  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    // A checked-out client is not covered by the pool's error listener: without one, a connection dropped
    // mid-transaction (database restart, failover) would be an uncaught 'error' event ending the process.
    // The failing query rejects as well, and the broken client is destroyed on release, not pooled again.
    let broken: Error | undefined;
    const onError = (err: Error) => (broken = err);
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const tx: Queryable = {
        query: async <R>(sql: string, params: readonly unknown[] = []) => {
          const r = await client.query(sql, params as unknown[]);
          return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
        },
      };
      const result = await fn(tx);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      if (!broken) await client.query('ROLLBACK').catch((e: Error) => (broken = e));
      throw err;
    } finally {
      client.off('error', onError);
      client.release(broken ?? false);
    }
  }
  async exec(sql: string): Promise<void> {
    await this.pool.query(sql);
  }

  private readonly channels = new Set<string>();
  private listener: pg.Client | undefined;
  private listening: Promise<void> | undefined;
  private readonly closing = new AbortController();

  listen(channel: string): void {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad LISTEN channel name ${channel}`);
    if (this.channels.has(channel)) return;
    this.channels.add(channel);
    if (this.listener) void this.listener.query(`LISTEN ${channel}`).catch(() => undefined); // else: on connect
    this.listening ??= this.keepListening();
  }

  /** Holds one connection that LISTENs on every channel asked for, until close; reconnects after a loss. */
  private async keepListening(): Promise<void> {
    for (let attempt = 0; !this.closing.signal.aborted;) {
      const client = new pg.Client({ connectionString: this.url, ...KEEP_ALIVE });
      const lost = new Promise<void>((resolve) => {
        client.on('error', () => resolve());
        client.on('end', () => resolve());
      });
      client.on('notification', (n) => this.signals.emit(notifyEvent(n.channel), n.payload ?? ''));
      const onClose = () => void client.end().catch(() => undefined);
      this.closing.signal.addEventListener('abort', onClose, { once: true });
      try {
        await client.connect();
        for (const c of this.channels) await client.query(`LISTEN ${c}`);
        this.listener = client;
        attempt = 0;
        for (const c of this.channels) this.signals.emit(notifyEvent(c), '*');
        await lost;
      } catch {
        // connect or LISTEN failed: the server is down; retry below
      }
      this.closing.signal.removeEventListener('abort', onClose);
      this.listener = undefined;
      await client.end().catch(() => undefined);
      await sleep(Math.min(10_000, 250 * 2 ** attempt++), undefined, { signal: this.closing.signal }).catch(
        () => undefined, // closed
      );
    }
  }

  async close(): Promise<void> {
    this.closing.abort(); // ends the listening connection, or its reconnect wait
    await this.listening;
    await this.pool.end();
  }
}

class PGliteDb implements Db {
  readonly kind = 'pglite' as const;
  readonly signals = new EventEmitter();
  constructor(
    readonly url: string,
    private readonly pglite: PGliteType,
  ) {
    this.signals.setMaxListeners(0);
  }
  async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    const r = await this.pglite.query<T>(sql, params as unknown[]);
    return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
  }
  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.pglite.transaction(async (t) =>
      fn({
        query: async <R>(sql: string, params: readonly unknown[] = []) => {
          const r = await t.query<R>(sql, params as unknown[]);
          return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
        },
      }),
    );
  }
  async exec(sql: string): Promise<void> {
    await this.pglite.exec(sql);
  }
  listen(): void {} // one process: its own writes already signal
  async close(): Promise<void> {
    if (!this.pglite.closed) await this.pglite.close();
  }
}

export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//.test(url);
}

export async function openDb(url: string, opts: { poolSize?: number } = {}): Promise<Db> {
  if (isPostgresUrl(url)) {
    const db = new PostgresDb(url, opts.poolSize ?? 10);
    await db.query('select 1');
    return db;
  }
  const { PGlite } = await import('@electric-sql/pglite');
  if (url === 'memory://' || url === '')
    return new PGliteDb('memory://', await PGlite.create({ loadDataDir: await freshClusterImage() }));
  const dir = resolve(url.replace(/^file:\/\//, ''));
  mkdirSync(dir, { recursive: true });
  const empty = readdirSync(dir).length === 0;
  return new PGliteDb(dir, await PGlite.create(dir, empty ? { loadDataDir: await freshClusterImage() } : {}));
}

let clusterImage: Promise<Blob> | undefined;

/**
 * A freshly initialised PGlite cluster as a tarball. initdb inside WASM costs seconds of CPU; loading this
 * image costs about a second, so new databases (tests, `memory://`, a first start) are made from it. It is
 * cached per process and on disk per PGlite version.
 */
function freshClusterImage(): Promise<Blob> {
  clusterImage ??= (async () => {
    const { PGlite } = await import('@electric-sql/pglite');
    const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite'); // <pkg>/dist/index.cjs
    const pkg = JSON.parse(readFileSync(join(dirname(dirname(entry)), 'package.json'), 'utf8')) as {
      version: string;
    };
    const version = pkg.version;
    const file = join(tmpdir(), `taskflow-pglite-${version}-cluster.tar`);
    if (existsSync(file)) return new Blob([readFileSync(file)]);
    const pglite = await PGlite.create();
    const image = await pglite.dumpDataDir('none');
    await pglite.close();
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, Buffer.from(await image.arrayBuffer()));
    renameSync(tmp, file);
    return image;
  })();
  return clusterImage;
}
