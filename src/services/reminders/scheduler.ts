/**
 * The reminder scheduler: every tick it claims due reminders with `SELECT ... FOR UPDATE SKIP LOCKED`, marks
 * them fired (or missed, when later than the grace window) and appends `reminder.triggered` /
 * `reminder.missed` to the outbox, all in one transaction. So a reminder fires exactly once with any number
 * of scheduler instances (on PostgreSQL they skip each other's locked rows) and across crashes (a crash
 * before the commit rolls the claim back; after it the relay publishes the outbox row). "Now" is the
 * injected clock, passed to SQL as a parameter.
 */
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import type { ReminderChannel } from '../../contracts/events.ts';
import type { Runtime } from '../../runtime.ts';
import { appendEvents } from '../../store/outbox.ts';
import { ROW_COLUMNS, pendingCount, reminderEvent, type ReminderRow } from './store.ts';
import { remindersManifest } from './manifest.ts';
import { TickLoop } from '../../tick-loop.ts';

export interface SchedulerOptions {
  tickMs: number;
  graceMs: number;
  batchSize: number;
  channels: readonly ReminderChannel[];
  /** Test hook: runs in the claim transaction after the rows are marked and before their events are written. */
  afterClaim?: (ids: readonly string[]) => Promise<void> | void;
}

export interface TickResult {
  triggered: number;
  missed: number;
}

const GAUGE_EVERY_MS = 5_000;

export class ReminderScheduler {
  private readonly loop: TickLoop;
  private lastGauge = 0;
  /** Totals of this instance (tests and logs). */
  readonly fired: TickResult = { triggered: 0, missed: 0 };

  constructor(
    private readonly rt: Runtime,
    private readonly opts: SchedulerOptions,
  ) {
    this.loop = new TickLoop({
      name: 'reminder scheduler',
      log: rt.log,
      round: async () => {
        await this.tick();
        await this.updateGauge();
        return opts.tickMs;
      },
    });
  }

  start(): void {
    this.loop.start();
  }

  /** Asks for a tick now (after a snooze to an instant that is already due, for instance). */
  poke(): void {
    this.loop.poke();
  }

  private async updateGauge(force = false) {
    if (!force && Date.now() - this.lastGauge < GAUGE_EVERY_MS) return;
    this.lastGauge = Date.now();
    this.rt.metrics.of(remindersManifest).pending.set(await pendingCount(this.rt.db));
  }

  /** Fires everything due now, batch by batch; returns what it did. */
  async tick(): Promise<TickResult> {
    const total: TickResult = { triggered: 0, missed: 0 };
    for (;;) {
      const r = await this.claimBatch();
      total.triggered += r.triggered;
      total.missed += r.missed;
      if (r.triggered + r.missed < this.opts.batchSize || this.loop.signal.aborted) break;
    }
    if (total.triggered + total.missed > 0) {
      this.fired.triggered += total.triggered;
      this.fired.missed += total.missed;
      await this.updateGauge(true).catch(() => undefined);
    }
    return total;
  }

  private async claimBatch(): Promise<TickResult> {
    const { db, clock } = this.rt;
    const metrics = this.rt.metrics.of(remindersManifest);
    const now = clock.now();
    const claimed = await db.transaction(async (tx) => {
      const rows = (
        await tx.query<ReminderRow>(
          `SELECT ${ROW_COLUMNS} FROM reminder_schedule
            WHERE status = 'scheduled' AND remind_at <= $1::timestamptz
            ORDER BY remind_at, id LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [now.toISOString(), this.opts.batchSize],
        )
      ).rows;
      if (rows.length === 0) return [];
      const late = (r: ReminderRow) => now.getTime() - new Date(r.remind_at).getTime();
      // Later than the grace window (the scheduler was down), a reminder is stale only once its task is due:
      // "due in 20 minutes" still helps after an outage, a reminder of a task already due does not.
      const missed = rows
        .filter((r) => late(r) > this.opts.graceMs && (r.due_at === null || new Date(r.due_at) <= now))
        .map((r) => r.id);
      const ids = rows.map((r) => r.id);
      await tx.query(
        `UPDATE reminder_schedule
            SET status = CASE WHEN id = ANY($2::uuid[]) THEN 'missed' ELSE 'triggered' END,
                triggered_at = $3, updated_at = now(),
                fire_count = fire_count + CASE WHEN id = ANY($2::uuid[]) THEN 0 ELSE 1 END
          WHERE id = ANY($1::uuid[])`,
        [ids, missed, now.toISOString()],
      );
      await this.opts.afterClaim?.(ids);
      const ctx = { now, channels: this.opts.channels };
      const missedSet = new Set(missed);
      // appendEvents locks the users' stream rows in key order: no deadlock between scheduler instances.
      const events: CloudEvent[] = rows.map((r) =>
        missedSet.has(r.id)
          ? reminderEvent('reminder.missed', r, ctx, {
              reason: `not fired within the grace window of ${Math.round(this.opts.graceMs / 1000)} s (late by ${Math.round(late(r) / 1000)} s)`,
            })
          : reminderEvent('reminder.triggered', r, ctx, {
              triggered_at: now,
              ...(r.snoozed ? { reason: 'snoozed' } : {}),
            }),
      );
      await appendEvents(tx, events);
      return rows.map((r) => ({ late: late(r), missed: missedSet.has(r.id) }));
    });
    if (claimed.length === 0) return { triggered: 0, missed: 0 };
    let missed = 0;
    for (const c of claimed) {
      if (c.missed) missed++;
      metrics.lateness.observe({ outcome: c.missed ? 'missed' : 'triggered' }, Math.max(0, c.late) / 1000);
    }
    return { triggered: claimed.length - missed, missed };
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
