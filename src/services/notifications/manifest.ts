/** The `notifications` target: what it is, its SMTP_*, VAPID_* and NOTIFY_* settings and its metrics. */
import { Counter, type Registry } from 'prom-client';
import { bool, ConfigError, int, quotedSecretly, type Env, TIMER_MAX_MS } from '../../config.ts';
import { passwordCutShort } from '../../url-credentials.ts';
import { TOPICS } from '../../contracts/topics.ts';
import type { TargetManifest } from '../../runtime.ts';

/**
 * NOTIFY_CLAIM_MS, at least twice NOTIFY_TIMEOUT_MS: a claim must outlast the send it covers (every device of a
 * push at once, each within the timeout), or another instance, or this one's next round, takes the delivery
 * again while it is being sent, and a device gets the reminder twice.
 */
function claimOf(env: Env, timeoutMs: number): number {
  const claimMs = int(env, 'NOTIFY_CLAIM_MS', Math.max(120_000, 2 * timeoutMs), 1, TIMER_MAX_MS);
  if (claimMs < 2 * timeoutMs)
    throw new ConfigError(
      `NOTIFY_CLAIM_MS (${claimMs}) must be at least twice NOTIFY_TIMEOUT_MS (${timeoutMs}): a delivery claimed for less than its send may take is sent twice`,
    );
  return claimMs;
}

/**
 * SMTP_URL, checked at start as the other addresses are: nodemailer took anything, `mail.example.com:587` as
 * the host 0.0.2.75 and `smtp//mail` as localhost (every mail failed, retried, then dead, while the start said
 * nothing), and a password with a `#` failed the start after migrating with `Invalid URL`, naming nothing (with
 * a warning that printed the URL, password and all). Errors mask the password.
 */
function smtpUrlOf(raw: string): string {
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    // named below
  }
  // A mail server's URL has no path: one is the end of a password whose unencoded `/` cut the host short.
  const misread = !!url && (passwordCutShort(url) || !['', '/'].includes(url.pathname));
  if (!url || !/^smtps?:\/\//i.test(raw) || !url.hostname || misread)
    throw new ConfigError(
      `SMTP_URL must be smtp://user:password@host:port or smtps://… (nodemailer's options may follow as ?name=value), the characters @ : / ? # % in the user or password percent-encoded (as encodeURIComponent does: # as %23, @ as %40, / as %2F), got ${quotedSecretly(raw)}`,
    );
  return raw;
}

export const notificationsManifest = {
  name: 'notifications',
  routes: ['/api/notifications'],
  description: 'notifications: reminder.triggered -> email / web push / in-app / webhook deliveries',
  serves:
    'preferences (an email address confirmed by a mailed code), push subscriptions, deliveries and the in-app inbox under `/api/notifications`',
  consumes: { group: 'taskflow-notifications', topics: [TOPICS.reminders], deadLetters: true },
  produces: ['notification.created'],
  sources: ['/taskflow/notifications'],
  effects: 'email, web push, webhook; in-app',
  owns: ['notifications', 'preferences', 'push subscriptions', 'email confirmation codes'],
  config: (env: Env) => {
    const timeoutMs = int(env, 'NOTIFY_TIMEOUT_MS', 10_000, 1, TIMER_MAX_MS);
    return {
      smtpUrl: env.SMTP_URL ? smtpUrlOf(env.SMTP_URL) : null,
      smtpFrom: env.SMTP_FROM || 'Taskflow <no-reply@taskflow.invalid>',
      vapid:
        env.VAPID_PUBLIC_KEY && env.VAPID_PRIVATE_KEY
          ? {
              publicKey: env.VAPID_PUBLIC_KEY,
              privateKey: env.VAPID_PRIVATE_KEY,
              subject: env.VAPID_SUBJECT || 'mailto:admin@taskflow.invalid',
            }
          : null,
      tickMs: int(env, 'NOTIFY_TICK_MS', 1_000, 1, TIMER_MAX_MS),
      batchSize: int(env, 'NOTIFY_BATCH_SIZE', 50, 1),
      maxAttempts: int(env, 'NOTIFY_MAX_ATTEMPTS', 8, 1),
      retryBaseMs: int(env, 'NOTIFY_RETRY_BASE_MS', 30_000, 0, TIMER_MAX_MS),
      retryMaxMs: int(env, 'NOTIFY_RETRY_MAX_MS', 3_600_000, 0, TIMER_MAX_MS),
      timeoutMs,
      claimMs: claimOf(env, timeoutMs),
      /** Finished deliveries and read in-app notifications older than this many days are deleted, hourly. */
      retentionDays: int(env, 'NOTIFY_RETENTION_DAYS', 30, 1),
      /** Unread in-app notifications kept per user, the newest; older ones beyond are deleted, hourly. */
      unreadMax: int(env, 'NOTIFY_UNREAD_MAX', 1_000, 1),
      /** Webhooks may target private, loopback and link-local addresses. */
      webhookAllowPrivate: bool(env, 'NOTIFY_WEBHOOK_ALLOW_PRIVATE', false),
    };
  },
  metrics: (registry: Registry) => ({
    deliveries: new Counter({
      name: 'taskflow_notification_deliveries_total',
      help: 'Notification delivery attempts by channel and outcome (sent, failed, dead, skipped)',
      labelNames: ['channel', 'outcome'] as const,
      registers: [registry],
    }),
    dead: new Counter({
      name: 'taskflow_notification_dead_total',
      help: 'Notifications given up after the maximum number of attempts, by channel',
      labelNames: ['channel'] as const,
      registers: [registry],
    }),
  }),
} as const satisfies TargetManifest;

export type NotificationsConfig = ReturnType<typeof notificationsManifest.config>;
