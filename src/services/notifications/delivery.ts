/**
 * The delivery loop: claims due per-(event, channel) delivery rows, sends each on its channel, and marks it
 * sent, or reschedules it with backoff, or after `maxAttempts` marks it dead. Channels are independent rows,
 * so a failing webhook never holds back the email or the consumer; up to NOTIFY_BATCH_SIZE are sent at once,
 * each freeing its slot when it ends, and one user takes at most a quarter of them (a user's slow receivers
 * hold back only that user's deliveries). Quiet hours are checked again at send
 * time (they may have been set after the reminder fired) and defer without counting an attempt. A send starts
 * only while its claim surely lasts through it, measured on the monotonic clock (claimHoldsForSend), as the
 * relay sends only under its lease.
 */
import { randomUUID } from 'node:crypto';
import { QUIET_CHANNELS, quietHoursEnd, retryDelayMs } from '../../domain/notifications.ts';
import type { Runtime } from '../../runtime.ts';
import {
  RefusedError,
  RetryLaterError,
  reminderContent,
  type EmailChannel,
  type PushChannel,
  type WebhookChannel,
} from './channels.ts';
import { BlockedAddressError } from './outbound.ts';
import {
  claimDeliveries,
  deferDelivery,
  releaseClaim,
  finishDelivery,
  getRecipient,
  insertInApp,
  listPushSubscriptions,
  markPushSent,
  pruneNotifications,
  notificationView,
  type DeliveryRow,
  type NotificationRow,
} from './store.ts';
import { makeEvent, type CloudEvent } from '../../contracts/cloudevent.ts';
import type { NotificationCreatedData } from '../../contracts/events.ts';
import { appendEvents } from '../../store/outbox.ts';
import { TickLoop } from '../../tick-loop.ts';
import { errorMessage } from '../../error-text.ts';
import { notificationsManifest } from './manifest.ts';

export interface DeliveryOptions {
  tickMs: number;
  batchSize: number;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** How long a claim lasts before another instance may retry the row (a sender that died mid-send). */
  claimMs: number;
  /** The longest a send takes (NOTIFY_TIMEOUT_MS: a webhook's or push's request, a mail's SMTP conversation). */
  timeoutMs: number;
  /** Days finished deliveries and read in-app notifications are kept (pruneNotifications, hourly). */
  retentionDays: number;
  /** Unread in-app notifications kept per user, the newest (pruneNotifications, hourly). */
  unreadMax: number;
}

const PRUNE_EVERY_MS = 3_600_000;
/** The least time between claims that found less than they could take, while deliveries are in flight. */
const CLAIM_SHORT_MS = 250;

export interface Channels {
  email: EmailChannel | null;
  push: PushChannel | null;
  webhook: WebhookChannel;
}

/** The channel was turned off (or lost its address) after the reminder fired: nothing to send. */
class Skip extends Error {}

export class DeliveryWorker {
  private readonly holder = randomUUID();
  private readonly loop: TickLoop;

  constructor(
    private readonly rt: Runtime,
    private readonly channels: Channels,
    private readonly opts: DeliveryOptions,
  ) {
    this.loop = new TickLoop({
      name: 'notification delivery loop',
      log: rt.log,
      // Slots all taken: a finished delivery pokes the loop. Filled: more may be due at once. A claim that found
      // less than it could take is not run again for CLAIM_SHORT_MS while deliveries are in flight (each that
      // ends pokes the loop): a claim passes over the due rows of users at their bound, which costs.
      round: async () => {
        const free = opts.batchSize - this.inFlight.size;
        if (free <= 0) return opts.tickMs;
        const since = performance.now() - this.shortClaimAt;
        if (this.inFlight.size > 0 && since < CLAIM_SHORT_MS) return CLAIM_SHORT_MS - since;
        const claimed = await this.claimAndStart(free);
        if (claimed >= free) return 0;
        this.shortClaimAt = performance.now();
        return opts.tickMs;
      },
    });
  }

  start(): void {
    this.loop.start();
  }

  poke(): void {
    this.loop.poke();
  }

  /** The most deliveries of one user in flight: a quarter of the slots, so others' go on beside them. */
  private get perUser(): number {
    return Math.max(1, Math.floor(this.opts.batchSize / 4));
  }

  /** When a claim last found fewer due deliveries than it had slots for (performance.now()). */
  private shortClaimAt = -Infinity;

  /** Deliveries being sent (at most `batchSize`). */
  private readonly inFlight = new Set<Promise<void>>();

  /**
   * Claims up to `free` due deliveries and starts them; returns how many it claimed. They are not awaited as a
   * batch: a slot taken by a receiver that answers at the timeout holds only itself, and each that ends frees
   * its slot at once (a batch waited for its slowest, so one user's slow webhooks delayed everyone's).
   */
  private async claimAndStart(free: number): Promise<number> {
    // The claims end at `now` plus their length, whenever the statement gets to run (after a prune, a wait on a
    // lock): measured from here, on the monotonic clock, what is left of them is never overestimated.
    const claimedAt = performance.now();
    const now = this.rt.clock.now();
    await this.prune(now);
    const rows = await claimDeliveries(this.rt.db, this.holder, now, free, this.opts.claimMs, this.perUser);
    for (const row of rows) {
      const sending: Promise<void> = this.deliver(row, claimedAt)
        .catch((err: unknown) =>
          // Its claim runs out and another round takes it again (the database went away mid-send).
          this.rt.log.warn(
            { err, delivery_id: row.id },
            'notification delivery failed; retried after its claim',
          ),
        )
        .finally(() => {
          this.inFlight.delete(sending);
          this.loop.poke();
        });
      this.inFlight.add(sending);
    }
    return rows.length;
  }

  private prunedAt = 0;

  /**
   * Hourly, on the database's background connection: finished deliveries and read in-app notifications older
   * than the retention go, and a user's unread notifications beyond NOTIFY_UNREAD_MAX (both tables grew
   * without bound). Every instance does it; the statement is idempotent.
   */
  private async prune(now: Date): Promise<void> {
    if (now.getTime() - this.prunedAt < PRUNE_EVERY_MS) return;
    this.prunedAt = now.getTime();
    const before = new Date(now.getTime() - this.opts.retentionDays * 86_400_000);
    const pruned = await pruneNotifications(this.rt.db.background(), before, now, this.opts.unreadMax);
    if (pruned.deliveries + pruned.notifications + pruned.unreadOverMax > 0)
      this.rt.log.info({ ...pruned, before: before.toISOString() }, 'notification history pruned');
  }

  /**
   * Whether a send may start under the claim made at `claimedAt` (performance.now(), which keeps counting while
   * the process is paused): only while the claim has a send's time left (NOTIFY_TIMEOUT_MS) and half of what it
   * holds beyond one (at least a send's, NOTIFY_CLAIM_MS being at least twice it); the other half is for
   * recording the outcome before the claim ends and for the instances' clocks disagreeing on when it ends.
   * Without this a worker stalled between its claim and its send (a GC or SIGSTOP pause, the database waiting
   * on a lock or failing over while the recipient was read) sent after the claim had lapsed, while another
   * instance, or this one's next round, had claimed the delivery again and sent it too: the reminder went out
   * twice. An in-app notification needs no check: it commits with its claim checked (finishDelivery).
   */
  private claimHoldsForSend(claimedAt: number): boolean {
    const { claimMs, timeoutMs } = this.opts;
    const left = claimMs - (performance.now() - claimedAt);
    return left >= timeoutMs + (claimMs - timeoutMs) / 2;
  }

  /**
   * Not sent: its claim may end during the send. Nothing is written: the claim runs out and the delivery is
   * claimed again (its attempt counted as one whose sender stopped, not as a failure). Releasing it was not
   * safe: claims are fenced on the holder, one per process, so the release could let go of the claim this
   * process's next round took meanwhile, and another instance would send it beside that round.
   */
  private claimLapsing(row: DeliveryRow, claimedAt: number): void {
    this.rt.log.warn(
      {
        delivery_id: row.id,
        channel: row.channel,
        since_claim_ms: Math.round(performance.now() - claimedAt),
        claim_ms: this.opts.claimMs,
      },
      'notification not sent: too little of its claim is left for a send (the process or the database stalled); it is sent once the claim runs out',
    );
  }

  private async deliver(row: DeliveryRow, claimedAt: number): Promise<void> {
    const { db, clock } = this.rt;
    const metrics = this.rt.metrics.of(notificationsManifest);
    const now = clock.now();
    try {
      // Claimed more often than it may be tried (a claim counts the attempt): the attempts before never ended,
      // the process sending it stopped each time (killed, out of memory), and none recorded a failure. Dead
      // (by `failed`), as a message that takes its consumer down is: it was claimed again for good.
      if (row.attempts > this.opts.maxAttempts)
        throw new Error(
          `${row.attempts - 1} attempts never ended (the process sending it stopped each time); not tried again`,
        );
      const prefs = await getRecipient(db, row.user_id, this.rt.config.defaultTimezone);
      if (!prefs.channels[row.channel]) throw new Skip(`channel ${row.channel} is turned off`);
      const timeZone = prefs.timezone;
      if (QUIET_CHANNELS.includes(row.channel) && prefs.quiet_hours) {
        const end = quietHoursEnd(now, prefs.quiet_hours, timeZone);
        if (end) {
          await deferDelivery(db, row.id, this.holder, end, { countAttempt: false, heldByQuietHours: true });
          return;
        }
      }
      switch (row.channel) {
        case 'in_app': {
          const c = reminderContent(row.payload, { timeZone });
          // The inbox row, its live push to the user's clients (an outbox event) and "sent" commit together:
          // exactly one in-app notification per delivery.
          await db.transaction(async (tx) => {
            const stored = await insertInApp(tx, row, { title: c.subject, body: c.text.trim() }, now);
            if (stored) await appendEvents(tx, [notificationCreated(row.user_id, stored, now)]);
            if (!(await finishDelivery(tx, row.id, this.holder, { status: 'sent', at: now })))
              throw new Error('lost the claim on the delivery');
          });
          metrics.deliveries.inc({ channel: row.channel, outcome: 'sent' });
          return;
        }
        case 'email': {
          if (!this.channels.email) throw new Skip('email is not configured (SMTP_URL)');
          if (!prefs.email) throw new Skip('no email address in the preferences');
          if (!prefs.email_confirmed) throw new Skip('the email address is not confirmed');
          if (!this.claimHoldsForSend(claimedAt)) return this.claimLapsing(row, claimedAt);
          await this.channels.email.send(prefs.email, row.payload, row.id, timeZone);
          break;
        }
        case 'webhook': {
          if (!prefs.webhook_url || !prefs.webhook_secret)
            throw new Skip('no webhook URL in the preferences');
          if (!this.claimHoldsForSend(claimedAt)) return this.claimLapsing(row, claimedAt);
          await this.channels.webhook.send(prefs.webhook_url, prefs.webhook_secret, row.payload, {
            deliveryId: row.id,
            eventId: row.event_id,
            now,
          });
          break;
        }
        case 'push': {
          const push = this.channels.push;
          if (!push) throw new Skip('web push is not configured (VAPID_* keys)');
          // Each subscription once: a retry (one device failing) goes only to those not reached yet.
          const reached = new Set(row.push_sent_to);
          const subs = (await listPushSubscriptions(db, row.user_id)).filter((s) => !reached.has(s.id));
          if (subs.length > 0 && !this.claimHoldsForSend(claimedAt)) return this.claimLapsing(row, claimedAt);
          // All at once: a delivery takes one send's time however many devices, well within its claim.
          const sends = await Promise.allSettled(
            subs.map(async (s) => {
              const outcome = await push.send(s, row.payload, row.id, timeZone, now);
              if (outcome === 'gone') await db.query('DELETE FROM push_subscriptions WHERE id = $1', [s.id]);
              else await markPushSent(db, row.id, s.id);
              return outcome;
            }),
          );
          const failed = sends.find((r) => r.status === 'rejected');
          if (failed) throw failed.reason;
          // No device got it, and none is left to get it (each removed, or gone as its push service said): not sent.
          if (reached.size === 0 && !sends.some((r) => r.status === 'fulfilled' && r.value === 'sent'))
            throw new Skip('no push subscription is left (removed, or gone as its push service answered)');
          break;
        }
      }
      await finishDelivery(db, row.id, this.holder, { status: 'sent', at: clock.now() });
      metrics.deliveries.inc({ channel: row.channel, outcome: 'sent' });
    } catch (err) {
      // The failure's time, not the attempt's: a backoff or a Retry-After counts from the answer (an attempt can
      // take NOTIFY_TIMEOUT_MS; the receiver was asked again that much early).
      await this.failed(row, clock.now(), err);
      // Dropped while it was being sent (its task done): the row stays skipped, not retried; its claim goes.
      await releaseClaim(db, row.id, this.holder).catch(() => undefined);
    }
  }

  /** A failed attempt: skipped, dead, or put back with backoff. */
  private async failed(row: DeliveryRow, now: Date, err: unknown): Promise<void> {
    const { db, log } = this.rt;
    const metrics = this.rt.metrics.of(notificationsManifest);
    const error = errorMessage(err);
    if (err instanceof Skip) {
      await finishDelivery(db, row.id, this.holder, { status: 'skipped', at: now, error }).catch(() => false);
      metrics.deliveries.inc({ channel: row.channel, outcome: 'skipped' });
      return;
    }
    // A webhook to a non-public address never becomes deliverable by retrying, nor a mail the server refused for good.
    if (
      row.attempts >= this.opts.maxAttempts ||
      err instanceof BlockedAddressError ||
      err instanceof RefusedError
    ) {
      await finishDelivery(db, row.id, this.holder, { status: 'dead', at: now, error }).catch(() => false);
      metrics.deliveries.inc({ channel: row.channel, outcome: 'dead' });
      metrics.dead.inc({ channel: row.channel });
      log.error(
        { delivery_id: row.id, channel: row.channel, attempts: row.attempts, error },
        'notification is dead',
      );
      return;
    }
    const backoff = retryDelayMs(row.attempts, {
      baseMs: this.opts.retryBaseMs,
      maxMs: this.opts.retryMaxMs,
    });
    // A receiver that said when to come back (Retry-After) is not asked before then, up to the longest backoff.
    const delay =
      err instanceof RetryLaterError
        ? Math.max(backoff, Math.min(err.afterMs, this.opts.retryMaxMs))
        : backoff;
    const deferred = await deferDelivery(db, row.id, this.holder, new Date(now.getTime() + delay), {
      error,
      countAttempt: true,
    }).catch(() => false);
    // Not put back: dropped meanwhile (its task done), or taken over by another instance.
    if (!deferred) return;
    metrics.deliveries.inc({ channel: row.channel, outcome: 'failed' });
    log.warn(
      { delivery_id: row.id, channel: row.channel, attempts: row.attempts, retry_in_ms: delay, error },
      'notification delivery failed; will retry',
    );
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await Promise.all(this.inFlight);
  }
}

/** The `notification.created` event that pushes a new in-app notification to the user's connected clients. */
function notificationCreated(
  userId: string,
  n: NotificationRow,
  now: Date,
): CloudEvent<NotificationCreatedData> {
  return makeEvent<NotificationCreatedData>({
    type: 'notification.created',
    source: '/taskflow/notifications',
    subject: n.task_id,
    key: userId,
    time: now,
    data: { user_id: userId, notification: notificationView(n) },
  });
}
