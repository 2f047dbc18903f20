/** Publishing on the embedded bus: one transaction appends the messages to the log (EmbeddedLog). */
import { type Db, type Tx } from '../../store/db.ts';
import { runWithEvents } from '../../store/outbox.ts';
import type { EmbeddedLog } from './log.ts';
import type { OutgoingMessage, Publisher } from '../types.ts';
export class EmbeddedPublisher implements Publisher {
  constructor(
    private readonly db: Db,
    private readonly log: EmbeddedLog,
  ) {}

  /** Appends in one statement (its own transaction). */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    await this.publishIn(this.db, messages);
  }

  /** Appends inside the caller's transaction (the relay uses this to move outbox rows exactly once). */
  async publishIn(tx: Tx, messages: readonly OutgoingMessage[]): Promise<void> {
    const preparing = this.log.ready([...new Set(messages.map((m) => m.topic))], tx);
    if (preparing) await preparing;
    const w = this.log.write(messages);
    await runWithEvents(tx, w, `WITH ${w.ctes} ${w.insert}`, w.params);
  }

  async close(): Promise<void> {}
}
