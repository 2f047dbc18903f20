/**
 * The embedded bus (BUS=embedded): a partitioned log in the database, with Kafka's semantics on one machine.
 * - publish: one transaction appends the messages; a per-partition counter row hands out gap-free offsets and
 *   its row lock makes offset order equal commit order, so readers never skip an offset that commits late.
 * - consumer groups: members heartbeat into bus_group_members and split the partitions round-robin; a member
 *   owns a partition through a lease row, and every position commit is fenced on still owning it.
 * - at-least-once: the position moves only after the handler resolved (or the message was dead-lettered).
 * Why hand-written: no library offers a Kafka-like log over PostgreSQL/PGlite that also runs in-process; the
 * code is small and tested by the same contract suite as the Kafka transport (docs/adr/0002).
 * One file per concern: options.ts, publisher.ts, group-member.ts (consumer groups), admin.ts, log.ts (the
 * log itself); this file puts them together as a Bus.
 */
import type { Db } from '../../store/db.ts';
import { EmbeddedLog } from './log.ts';
import { assembleBus, type Bus } from '../types.ts';
import { EmbeddedAdmin } from './admin.ts';
import { EmbeddedSubscriber } from './group-member.ts';
import type { EmbeddedBusOptions } from './options.ts';
import { EmbeddedPublisher } from './publisher.ts';

export { EmbeddedAdmin } from './admin.ts';
export { EmbeddedSubscriber } from './group-member.ts';
export type { EmbeddedBusOptions } from './options.ts';
export { EmbeddedPublisher } from './publisher.ts';

export function createEmbeddedBus(
  db: Db,
  opts: EmbeddedBusOptions,
): Bus & { publisher: EmbeddedPublisher; admin: EmbeddedAdmin } {
  // The bus lives in this database: transactions write their events straight into its log.
  const log = EmbeddedLog.of(db);
  if (opts.onAppended) log.onAppended = opts.onAppended;
  const publisher = new EmbeddedPublisher(db, log);
  const subscriber = new EmbeddedSubscriber(db, log, publisher, opts);
  const admin = new EmbeddedAdmin(db, opts.sessionTimeoutMs);
  return assembleBus('embedded', { publisher, subscriber, admin });
}
