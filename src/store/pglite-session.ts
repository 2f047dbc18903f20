/**
 * PGlite with its statements kept prepared. `PGlite.query` parses, describes and plans every statement
 * again, in six calls into WebAssembly (Parse, Describe, Bind, Describe, Execute, Sync). Here each SQL text
 * is parsed and described once, as a named statement of the session, and then run with one call (Bind,
 * Execute, Sync): measured on PGlite 0.5, a single-row INSERT costs 0.06-0.11 ms of CPU instead of
 * 0.24-0.26 ms, a primary-key SELECT 0.05 ms instead of 0.21 ms (docs/adr/0008-the-cost-of-a-write.md).
 * This is what PostgreSQL drivers call a statement cache (pgjdbc's, Npgsql's); PGlite's API has none.
 *
 * Values are serialized and rows parsed with the instance's own serializers and parsers, by the types the
 * statement's description gives, as `PGlite.query` does. One statement or one transaction runs at a time
 * (`exclusive`); this session must be the only user of the instance while it is open.
 */
import { serialize } from 'pg-protocol';
import type { PGlite } from '@electric-sql/pglite';

export interface SessionResult<T> {
  rows: T[];
  rowCount: number;
  /** The command tag's first word: `INSERT`, `SELECT`, `COMMIT`, `ROLLBACK`... */
  command: string;
}

interface Prepared {
  name: string;
  paramTypes: number[];
  fields: { name: string; typeId: number }[];
}

interface Message {
  name: string;
}
interface DataRow extends Message {
  fields: (string | null)[];
}

/** Prepared statements kept per session; the least recently used is closed beyond this (pgjdbc: 256). */
const CAPACITY = 256;

export class PGliteSession {
  private readonly prepared = new Map<string, Prepared>();
  private named = 0;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly pglite: PGlite,
    private readonly capacity = CAPACITY,
  ) {}

  /** Runs `fn` alone: nothing else runs on the session until it settles. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs one statement; only inside `exclusive`. `sync` asks the filesystem to persist afterwards (a
   * statement outside a transaction, a COMMIT), as `PGlite.query` does outside a transaction.
   */
  async run<T>(sql: string, params: readonly unknown[], sync: boolean): Promise<SessionResult<T>> {
    const statement = this.prepared.get(sql) ?? (await this.prepare(sql));
    const values = params.map((value, i) => this.serializeParam(value, statement.paramTypes[i]));
    const { messages } = await this.pglite.execProtocol(
      Buffer.concat([
        serialize.bind({ statement: statement.name, values }),
        serialize.execute(),
        serialize.sync(),
      ]),
      { syncToFs: sync },
    );
    return this.results<T>(messages as Message[], statement);
  }

  /** Forgets every prepared statement (after DDL run with `exec`: result shapes may have changed). */
  async reset(): Promise<void> {
    if (this.prepared.size === 0) return;
    this.prepared.clear();
    await this.pglite.exec('DEALLOCATE ALL');
  }

  private async prepare(sql: string): Promise<Prepared> {
    const name = `tf${++this.named}`;
    const evicted: Buffer[] = [];
    if (this.prepared.size >= this.capacity) {
      const [oldest, stmt] = this.prepared.entries().next().value as [string, Prepared];
      this.prepared.delete(oldest);
      evicted.push(serialize.close({ type: 'S', name: stmt.name }));
    }
    const { messages } = await this.pglite.execProtocol(
      Buffer.concat([
        ...evicted,
        serialize.parse({ name, text: sql, types: [] }),
        serialize.describe({ type: 'S', name }),
        serialize.sync(),
      ]),
      { syncToFs: false },
    );
    let paramTypes: number[] = [];
    let fields: Prepared['fields'] = [];
    for (const m of messages as Message[]) {
      if (m.name === 'parameterDescription')
        paramTypes = (m as unknown as { dataTypeIDs: number[] }).dataTypeIDs;
      else if (m.name === 'rowDescription')
        fields = (m as unknown as { fields: { name: string; dataTypeID: number }[] }).fields.map((f) => ({
          name: f.name,
          typeId: f.dataTypeID,
        }));
    }
    const statement = { name, paramTypes, fields };
    this.prepared.set(sql, statement);
    return statement;
  }

  private serializeParam(value: unknown, typeId: number | undefined): string | null {
    if (value === null || value === undefined) return null;
    const serializer = typeId === undefined ? undefined : this.pglite.serializers[typeId];
    return serializer ? serializer(value) : String(value);
  }

  private results<T>(messages: Message[], statement: Prepared): SessionResult<T> {
    const rows: T[] = [];
    let tag = '';
    const parsers = this.pglite.parsers;
    const { fields } = statement;
    for (const m of messages) {
      if (m.name === 'dataRow') {
        const values = (m as DataRow).fields;
        const row: Record<string, unknown> = {};
        for (let i = 0; i < fields.length; i++) {
          const raw = values[i] ?? null;
          const { name, typeId } = fields[i]!;
          const parse = parsers[typeId];
          row[name] = raw === null ? null : parse ? parse(raw, typeId) : raw;
        }
        rows.push(row as T);
      } else if (m.name === 'commandComplete') tag = (m as unknown as { text: string }).text;
    }
    const words = tag.split(' ');
    const count = Number.parseInt(words[words.length - 1]!, 10);
    return { rows, rowCount: Number.isNaN(count) ? rows.length : count, command: words[0]! };
  }
}
