/**
 * PGlite with its statements kept prepared. `PGlite.query` parses, describes and plans every statement
 * again, in six calls into WebAssembly (Parse, Describe, Bind, Describe, Execute, Sync). Here each SQL text
 * is parsed and described once, as a named statement of the session, and then run with one call (Bind,
 * Execute, Sync): measured on PGlite 0.5, a single-row INSERT costs 0.06-0.11 ms of CPU instead of
 * 0.24-0.26 ms, a primary-key SELECT 0.05 ms instead of 0.21 ms (docs/adr/0008-the-cost-of-a-write.md).
 * This is what PostgreSQL drivers call a statement cache (pgjdbc's, Npgsql's); PGlite's API has none.
 *
 * Values are serialized and rows parsed by the types the statement's description gives, with PGlite's
 * serializers and parsers, as `PGlite.query` does. Callers run one statement or one transaction at a time
 * (`PGliteDb`'s lock), and nothing else uses the instance.
 */
import { setImmediate as loopTurn } from 'node:timers/promises';
import { protocol, type PGlite } from '@electric-sql/pglite';

export interface SessionResult<T> {
  rows: T[];
  rowCount: number;
  /** The command tag's first word: `INSERT`, `SELECT`, `COMMIT`, `ROLLBACK`... */
  command: string;
}

/** The backend messages a session reads, as PGlite's protocol parser gives them. */
export type Message =
  | { name: 'dataRow'; fields: (string | null)[] }
  | { name: 'commandComplete'; text: string }
  | { name: 'parameterDescription'; dataTypeIDs: number[] }
  | { name: 'rowDescription'; fields: { name: string; dataTypeID: number }[] }
  | { name: string };

interface Prepared {
  name: string;
  paramTypes: number[];
  fields: { name: string; typeId: number }[];
}

/**
 * Statements run back to back for this long, the next one lets the event loop turn first. PGlite runs in this
 * thread and its statements settle as promise callbacks, so a command running one after another (an audit
 * verify, a DLQ replay) never let the loop turn: no timer ran (the data directory's lock went unrenewed until
 * another process took it over, and the two destroyed the directory) and no signal handler (Ctrl-C ignored).
 */
const LOOP_TURN_EVERY_MS = 50;

/** Prepared statements kept per session; the least recently used is closed beyond this (pgjdbc: 256). */
const CAPACITY = 256;
const { serialize } = protocol;

/**
 * The embedded database stopped: PostgreSQL ended its session with a PANIC or FATAL error (a write of its log
 * failed on a full disk, say). PostgreSQL's server restarts after one; in PGlite, the next statement never came
 * back and held the thread.
 */
export class DatabaseStoppedError extends Error {
  constructor(cause: unknown) {
    super(`the embedded database stopped: ${(cause as Error).message}`, { cause });
    this.name = 'DatabaseStoppedError';
  }
}

export class PGliteSession {
  private readonly prepared = new Map<string, Prepared>();
  private named = 0;
  /** Set once the database stopped (DatabaseStoppedError): every later call fails with it, at once. */
  private stopped: DatabaseStoppedError | undefined;
  /** When the event loop last turned between this session's statements (LOOP_TURN_EVERY_MS). */
  private lastTurn = performance.now();

  constructor(
    private readonly pglite: PGlite,
    private readonly capacity = CAPACITY,
    /** Runs once the instance is closed (the data directory's lock is released). */
    private readonly onClose: () => void = () => undefined,
    /** Told once when the database stopped (the process ends: nothing more can be done with it). */
    private readonly onStopped: (err: DatabaseStoppedError) => void = () => undefined,
  ) {}

  /** `err`, or the DatabaseStoppedError it means (recorded, and told once). */
  private stoppedBy(err: unknown): unknown {
    const severity = (err as { severity?: string } | null)?.severity;
    if (severity !== 'PANIC' && severity !== 'FATAL') return err;
    if (!this.stopped) {
      this.stopped = new DatabaseStoppedError(err);
      this.onStopped(this.stopped);
    }
    return this.stopped;
  }

  /**
   * Runs one statement. `sync` asks the filesystem to persist afterwards (a statement outside a transaction,
   * a COMMIT), as `PGlite.query` does outside a transaction. `begin` runs BEGIN first, in the same call (the
   * first statement of a transaction: one call fewer per transaction).
   */
  async run<T>(
    sql: string,
    params: readonly unknown[],
    sync: boolean,
    begin = false,
  ): Promise<SessionResult<T>> {
    if (performance.now() - this.lastTurn >= LOOP_TURN_EVERY_MS) {
      await loopTurn();
      this.lastTurn = performance.now();
    }
    const first = begin ? await this.statement('BEGIN') : undefined;
    const statement = await this.statement(sql);
    const values = params.map((value, i) => this.serializeParam(value, statement.paramTypes[i]));
    const messages = await this.execProtocol(
      Buffer.concat([
        ...(first ? [serialize.bind({ statement: first.name }), serialize.execute({})] : []),
        serialize.bind({ statement: statement.name, values }),
        serialize.execute({}),
        serialize.sync(),
      ]),
      sync,
    );
    return this.results<T>(messages, statement, first ? 1 : 0);
  }

  /** The prepared statement of `sql`, prepared now if it is not. */
  private async statement(sql: string): Promise<Prepared> {
    const statement = this.prepared.get(sql);
    if (!statement) return this.prepare(sql);
    this.prepared.delete(sql); // now the most recently used: the Map's order is the eviction order
    this.prepared.set(sql, statement);
    return statement;
  }

  /** Runs SQL scripts (DDL) and forgets every prepared statement: result shapes may have changed. */
  async exec(sql: string): Promise<void> {
    if (this.stopped) throw this.stopped;
    await this.pglite.exec(sql).catch((err: unknown) => {
      throw this.stoppedBy(err);
    });
    if (this.prepared.size === 0) return;
    this.prepared.clear();
    await this.pglite.exec('DEALLOCATE ALL');
  }

  async close(): Promise<void> {
    if (this.pglite.closed) return;
    await this.pglite.close();
    this.onClose();
  }

  private async execProtocol(message: Uint8Array, sync: boolean): Promise<Message[]> {
    if (this.stopped) throw this.stopped;
    try {
      return (await this.pglite.execProtocol(message, { syncToFs: sync })).messages as Message[];
    } catch (err) {
      throw this.stoppedBy(err);
    }
  }

  private async prepare(sql: string): Promise<Prepared> {
    const name = `tf${++this.named}`;
    const evicted: Uint8Array[] = [];
    if (this.prepared.size >= this.capacity) {
      const [oldest, stmt] = this.prepared.entries().next().value as [string, Prepared];
      this.prepared.delete(oldest);
      evicted.push(serialize.close({ type: 'S', name: stmt.name }));
    }
    const messages = await this.execProtocol(
      Buffer.concat([
        ...evicted,
        serialize.parse({ name, text: sql, types: [] }),
        serialize.describe({ type: 'S', name }),
        serialize.sync(),
      ]),
      false,
    );
    const statement: Prepared = { name, paramTypes: [], fields: [] };
    for (const m of messages) {
      if ('dataTypeIDs' in m) statement.paramTypes = m.dataTypeIDs;
      else if (m.name === 'rowDescription' && 'fields' in m)
        statement.fields = (m.fields as { name: string; dataTypeID: number }[]).map((f) => ({
          name: f.name,
          typeId: f.dataTypeID,
        }));
    }
    this.prepared.set(sql, statement);
    return statement;
  }

  private serializeParam(value: unknown, typeId: number | undefined): string | null {
    if (value === null || value === undefined) return null;
    const serializer = typeId === undefined ? undefined : this.pglite.serializers[typeId];
    return serializer ? serializer(value) : String(value);
  }

  /** The rows and tag of `statement`, after the command tags of `skip` statements run before it. */
  private results<T>(messages: Message[], statement: Prepared, skip: number): SessionResult<T> {
    const rows: T[] = [];
    let tag = '';
    const { parsers } = this.pglite;
    const { fields } = statement;
    for (const m of messages) {
      if (m.name === 'dataRow' && 'fields' in m) {
        const values = m.fields as (string | null)[];
        const row: Record<string, unknown> = {};
        for (let i = 0; i < fields.length; i++) {
          const raw = values[i] ?? null;
          const { name, typeId } = fields[i]!;
          const parse = parsers[typeId];
          row[name] = raw === null ? null : parse ? parse(raw, typeId) : raw;
        }
        rows.push(row as T);
      } else if ('text' in m) {
        if (skip > 0) skip--;
        else tag = m.text;
      }
    }
    const words = tag.split(' ');
    const count = Number.parseInt(words[words.length - 1]!, 10);
    return { rows, rowCount: Number.isNaN(count) ? rows.length : count, command: words[0]! };
  }
}
