/**
 * The `notifications` target: consumes the `reminders` topic and, for each `reminder.triggered`, records one
 * delivery per enabled channel (email, web push, in-app, webhook) in the same transaction as the event id;
 * a delivery loop sends them with retries, quiet hours and dead-marking. Serves the preferences, push
 * subscription and in-app inbox API under /api/notifications.
 *
 * Environment (read in manifest.ts): SMTP_URL (e.g. smtp://user:pass@mail:587; email is off without it), SMTP_FROM,
 * VAPID_PUBLIC_KEY / VAPID_PRIVATE_KEY / VAPID_SUBJECT (web push is off without them), NOTIFY_TICK_MS
 * (1000), NOTIFY_MAX_ATTEMPTS (8), NOTIFY_RETRY_BASE_MS (30000), NOTIFY_RETRY_MAX_MS (3600000),
 * NOTIFY_TIMEOUT_MS (10000), NOTIFY_BATCH_SIZE (50), NOTIFY_CLAIM_MS (120000).
 */
import type { Agent } from 'node:https';
import type { ReminderEventData } from '../../contracts/events.ts';
import { notificationsManifest, type NotificationsConfig } from './manifest.ts';
import { QUIET_CHANNELS, quietHoursEnd, type Channel } from '../../domain/notifications.ts';
import type { TargetDefinition } from '../../runtime.ts';
import { consumerTarget, transactional } from '../consumer-target.ts';
import { EmailChannel, PushChannel, WebhookChannel } from './channels.ts';
import { DeliveryWorker } from './delivery.ts';
import { registerNotificationRoutes } from './routes.ts';
import { dismissedBecause } from '../../domain/reminders.ts';
import {
  cancelPendingDeliveries,
  enqueueDeliveries,
  firedAt,
  getRecipient,
  laterFiringHandled,
  listPushSubscriptions,
} from './store.ts';

/** Overrides of the SMTP_*, VAPID_* and NOTIFY_* variables. */
export interface NotificationsOptions extends Partial<NotificationsConfig> {
  /** TLS agent for the push service (tests: a local push service with a self-signed certificate). */
  pushAgent?: Agent;
}

export function createNotificationsTarget(options?: NotificationsOptions): TargetDefinition {
  return consumerTarget({
    manifest: notificationsManifest,
    async setup(rt) {
      rt.metrics.of(notificationsManifest); // on /metrics from the start, before the first delivery
      const opts = { ...notificationsManifest.config(rt.config.env), ...options };
      const { timeoutMs } = opts;
      const log = rt.log.child({ component: 'notifications' });
      const link = rt.config.publicUrl ? `${rt.config.publicUrl}/` : undefined;
      const email = opts.smtpUrl
        ? await EmailChannel.open(opts.smtpUrl, opts.smtpFrom, timeoutMs, link)
        : null;
      const push = opts.vapid
        ? await PushChannel.open(opts.vapid, timeoutMs, {
            ...(opts.pushAgent ? { agent: opts.pushAgent } : {}),
            ...(link ? { link } : {}),
            allowPrivate: opts.webhookAllowPrivate,
          })
        : null;
      if (!email) log.info('email notifications are off (set SMTP_URL)');
      if (!push) log.info('web push notifications are off (set VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY)');
      const worker = new DeliveryWorker(
        rt,
        { email, push, webhook: new WebhookChannel(timeoutMs, opts.webhookAllowPrivate) },
        opts,
      );
      await registerNotificationRoutes(rt.http.app, {
        db: rt.db,
        clock: rt.clock,
        verify: rt.verify,
        vapidPublicKey: opts.vapid?.publicKey ?? null,
        email,
        allowPrivateTargets: opts.webhookAllowPrivate,
      });
      worker.start();

      const service = transactional({
        db: rt.db,
        group: notificationsManifest.consumes.group,
        // Scheduled and missed reminders have nothing to deliver.
        accepts: (e) => e.type === 'reminder.triggered' || e.type === 'reminder.dismissed',
        async effect(tx, consumed) {
          const now = rt.clock.now();
          let added = 0;
          for (const { event: e } of consumed) {
            const data = e.data as ReminderEventData;
            if (e.type === 'reminder.dismissed') {
              // Deliveries still waiting (quiet hours, retries), and dead ones a retry would send, of a reminder
              // dismissed by the user or by its task (completed, deleted, moved) are dropped: those of its
              // firings up to the dismissal or to the last firing it names (stamped by another process's clock,
              // that one may be a little later), not of one after (the reminder wanted again, then fired).
              const upTo = data.triggered_at && data.triggered_at > e.time ? data.triggered_at : e.time;
              await cancelPendingDeliveries(
                tx,
                data.user_id,
                data.reminder_id,
                dismissedBecause(data.reason),
                {
                  upTo,
                  dead: true,
                },
              );
              continue;
            }
            // A reminder that fires again (snoozed) replaces what of its earlier firing still waits: one message.
            // A firing handled after a later one of the same reminder (a redelivery, a DLQ replay) is out of
            // date: recorded as skipped, and the later firing's deliveries stay.
            const fired = firedAt(data);
            if (await laterFiringHandled(tx, data.user_id, data.reminder_id, fired)) {
              await enqueueDeliveries(
                tx,
                e.id,
                data,
                data.channels.map((channel) => ({ channel, at: now })),
                'a later firing of the reminder was handled first',
              );
              continue;
            }
            await cancelPendingDeliveries(
              tx,
              data.user_id,
              data.reminder_id,
              'the reminder fired again (snoozed) before this was sent',
              { upTo: fired, except: e.id },
            );
            const prefs = await getRecipient(tx, data.user_id, rt.config.defaultTimezone);
            const quietEnd = prefs.quiet_hours ? quietHoursEnd(now, prefs.quiet_hours, prefs.timezone) : null;
            const wanted: { channel: Channel; at: Date; heldByQuietHours: boolean }[] = [];
            for (const channel of new Set(data.channels)) {
              if (!prefs.channels[channel]) continue;
              if (channel === 'email' && (!email || !prefs.email || !prefs.email_confirmed)) continue;
              if (channel === 'webhook' && !prefs.webhook_url) continue;
              if (
                channel === 'push' &&
                (!push || (await listPushSubscriptions(tx, data.user_id)).length === 0)
              )
                continue;
              const held = quietEnd !== null && QUIET_CHANNELS.includes(channel);
              wanted.push({ channel, at: held ? quietEnd : now, heldByQuietHours: held });
            }
            added += await enqueueDeliveries(tx, e.id, data, wanted);
          }
          if (added > 0) tx.afterCommit(() => worker.poke());
        },
      });

      return {
        ...service,
        async stop() {
          await worker.stop();
          email?.close();
        },
      };
    },
  });
}

export const notificationsTarget: TargetDefinition = createNotificationsTarget();
