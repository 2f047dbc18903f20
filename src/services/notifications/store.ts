/**
 * The notifications service's tables (migration 004_notifications.sql): preferences, push subscriptions,
 * per-(event, channel) deliveries and the in-app inbox.
 */
import { domainToASCII } from 'node:url';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { uuidv7 } from '../../ids.ts';
import type { InAppNotification, ReminderEventData } from '../../contracts/events.ts';
import {
  DEFAULT_PREFERENCES,
  EMAIL_CONFIRMATION,
  emailCodeHash,
  emailCodeMatches,
  type Channel,
  type NotificationPreferences,
  type PreferencesPatch,
  type PushSubscriptionInput,
} from '../../domain/notifications.ts';
import type { Queryable } from '../../store/db.ts';

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

export interface StoredPreferences extends NotificationPreferences {
  webhook_secret: string | null;
  /** The address's owner typed back the code mailed to it (EMAIL_CONFIRMATION): reminders are mailed to it. */
  email_confirmed: boolean;
}

/** What a reminder's delivery needs to know of its user: the preferences, and the zone it is read in. */
export interface Recipient extends StoredPreferences {
  /**
   * The user's own zone (user_settings, GET /api/me/settings), or the deployment's DEFAULT_TIMEZONE when never
   * set: quiet hours without a zone and the due time a message shows are read in it.
   */
  timezone: string;
}

type PrefRow = { user_timezone: string | null } & (
  | {
      email: string | null;
      email_confirmed: boolean;
      email_enabled: boolean;
      push_enabled: boolean;
      in_app_enabled: boolean;
      webhook_enabled: boolean;
      webhook_url: string | null;
      webhook_secret: string | null;
      quiet_start: string | null;
      quiet_end: string | null;
      quiet_timezone: string | null;
    }
  | { email_enabled: null }
);

export async function getPreferences(q: Queryable, userId: string): Promise<StoredPreferences> {
  const { user_timezone: _zone, ...prefs } = await readPreferences(q, userId);
  return prefs;
}

/**
 * The preferences with the user's effective zone, for the consumer that queues deliveries and the worker that
 * sends them: both must read quiet hours and due times in the same zone, so the fallback lives here, once.
 */
export async function getRecipient(
  q: Queryable,
  userId: string,
  defaultTimezone: string,
): Promise<Recipient> {
  const { user_timezone, ...prefs } = await readPreferences(q, userId);
  return { ...prefs, timezone: user_timezone ?? defaultTimezone };
}

async function readPreferences(
  q: Queryable,
  userId: string,
): Promise<StoredPreferences & { user_timezone: string | null }> {
  const r = (
    await q.query<PrefRow>(
      `SELECT p.email, p.email IS NOT NULL AND p.email_confirmed_at IS NOT NULL AS email_confirmed,
              p.email_enabled, p.push_enabled, p.in_app_enabled, p.webhook_enabled, p.webhook_url,
              p.webhook_secret, p.quiet_start, p.quiet_end, p.quiet_timezone,
              CASE WHEN s.timezone_set THEN s.timezone END AS user_timezone
         FROM (SELECT $1::text AS user_id) u
         LEFT JOIN notification_preferences p ON p.user_id = u.user_id
         LEFT JOIN user_settings s ON s.user_id = u.user_id`,
      [userId],
    )
  ).rows[0]!;
  if (r.email_enabled === null)
    return {
      ...DEFAULT_PREFERENCES,
      channels: { ...DEFAULT_PREFERENCES.channels },
      webhook_secret: null,
      email_confirmed: false,
      user_timezone: r.user_timezone,
    };
  return {
    email: r.email,
    email_confirmed: r.email_confirmed,
    channels: {
      email: r.email_enabled,
      push: r.push_enabled,
      in_app: r.in_app_enabled,
      webhook: r.webhook_enabled,
    },
    quiet_hours:
      r.quiet_start && r.quiet_end
        ? { start: r.quiet_start, end: r.quiet_end, timezone: r.quiet_timezone }
        : null,
    webhook_url: r.webhook_url,
    webhook_secret: r.webhook_secret,
    user_timezone: r.user_timezone,
  };
}

/**
 * Merges `patch` into the stored preferences. A webhook URL without a secret (a new URL without one of its own
 * too) gets a generated one, returned once in `generatedSecret` (the API shows it in that answer only).
 */
export async function putPreferences(
  q: Queryable,
  userId: string,
  patch: PreferencesPatch,
  now: Date,
): Promise<{ prefs: StoredPreferences; generatedSecret: string | null; emailChanged: boolean }> {
  // Locked while it is merged: two PUTs at once each answer what they wrote, whether the address changed
  // and is confirmed included.
  await q.query('SELECT 1 FROM notification_preferences WHERE user_id = $1 FOR UPDATE', [userId]);
  const current = await getPreferences(q, userId);
  // Quiet hours changed: what they held back is looked at again now, under the new ones (sent, or held until
  // their end). It waited for the old window's end: turned off, quiet hours still held it for hours.
  if (
    patch.quiet_hours !== undefined &&
    JSON.stringify(patch.quiet_hours) !== JSON.stringify(current.quiet_hours)
  )
    await q.query(
      `UPDATE notification_deliveries SET next_attempt_at = $2, held_until = NULL
        WHERE user_id = $1 AND status = 'pending' AND claimed_by IS NULL AND next_attempt_at = held_until
          AND next_attempt_at > $2`,
      [userId, now.toISOString()],
    );
  const email = patch.email !== undefined ? patch.email : current.email;
  const next: StoredPreferences = {
    email,
    // Another address is not confirmed yet, whatever the previous one was; a code mailed to it is void (the
    // table's trigger, migration 020, clears both).
    email_confirmed: email === current.email && current.email_confirmed,
    channels: { ...current.channels, ...patch.channels },
    quiet_hours: patch.quiet_hours !== undefined ? patch.quiet_hours : current.quiet_hours,
    webhook_url: patch.webhook_url !== undefined ? patch.webhook_url : current.webhook_url,
    // A new address without a secret of its own gets a new one: the receiver before it holds the old secret
    // and could sign requests that the new receiver would take for Taskflow's.
    webhook_secret:
      patch.webhook_secret !== undefined
        ? patch.webhook_secret
        : patch.webhook_url !== undefined && patch.webhook_url !== current.webhook_url
          ? null
          : current.webhook_secret,
  };
  let generatedSecret: string | null = null;
  if (next.webhook_url && !next.webhook_secret) {
    generatedSecret = `whsec_${randomBytes(24).toString('base64url')}`;
    next.webhook_secret = generatedSecret;
  }
  await q.query(
    `INSERT INTO notification_preferences (user_id, email, email_enabled, push_enabled, in_app_enabled,
       webhook_enabled, webhook_url, webhook_secret, quiet_start, quiet_end, quiet_timezone, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
     ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, email_enabled = excluded.email_enabled,
       push_enabled = excluded.push_enabled, in_app_enabled = excluded.in_app_enabled,
       webhook_enabled = excluded.webhook_enabled, webhook_url = excluded.webhook_url,
       webhook_secret = excluded.webhook_secret, quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
       quiet_timezone = excluded.quiet_timezone, updated_at = now()`,
    [
      userId,
      next.email,
      next.channels.email,
      next.channels.push,
      next.channels.in_app,
      next.channels.webhook,
      next.webhook_url,
      next.webhook_secret,
      next.quiet_hours?.start ?? null,
      next.quiet_hours?.end ?? null,
      next.quiet_hours?.timezone ?? null,
    ],
  );
  return { prefs: next, generatedSecret, emailChanged: email !== current.email };
}

/** Preferences as the API shows them: the webhook secret is never shown again. */
export const preferencesView = (p: StoredPreferences) => ({
  email: p.email,
  email_confirmed: p.email_confirmed,
  channels: p.channels,
  quiet_hours: p.quiet_hours,
  webhook_url: p.webhook_url,
  webhook_secret_set: p.webhook_secret !== null,
});

type EmailCodeRow = {
  email: string | null;
  confirmed: boolean;
  code_hash: string | null;
  expires_at: Date | null;
  attempts: number;
};

async function lockEmailCode(q: Queryable, userId: string): Promise<EmailCodeRow | undefined> {
  return (
    await q.query<EmailCodeRow>(
      `SELECT email, email_confirmed_at IS NOT NULL AS confirmed, email_code_hash AS code_hash,
              email_code_expires_at AS expires_at, email_code_attempts AS attempts
         FROM notification_preferences WHERE user_id = $1 FOR UPDATE`,
      [userId],
    )
  ).rows[0];
}

const DAY_MS = 86_400_000;
/**
 * An address as the per-recipient limit counts it, not kept in clear: one mailbox whatever its case, its `+tag`
 * (victim+1@, victim+2@ reach one inbox) and the spelling of its domain (bücher.example and its punycode,
 * xn--bcher-kva.example, are one domain, and so is bücher.example. with the root's dot).
 */
export function recipientKey(email: string): string {
  const at = email.lastIndexOf('@');
  const local = email.slice(0, at).toLowerCase().replace(/\+.*$/, '');
  const domain = email.slice(at + 1).toLowerCase();
  // The root's dot taken off after IDNA mapping, which turns an ideographic or full-width one (。．｡) into '.'.
  const ascii = (domainToASCII(domain) || domain).replace(/[.\u3002\uff0e\uff61]+$/, '');
  return createHash('sha256').update(`${local}@${ascii}`).digest('hex');
}

export type ReservedEmailCode =
  | { ok: true; email: string; code: string; expiresAt: Date; sendId: string }
  | { ok: false; reason: 'no address' | 'confirmed' }
  | { ok: false; reason: 'user limit' | 'address limit'; retryAt: Date };

/**
 * A new code for the user's unconfirmed address, within EMAIL_CONFIRMATION.perDay codes in any 24 hours for
 * the user and as many for the address whatever the user. The send is counted here; the caller mails the
 * code, then stores it (storeEmailCode), or takes the count back when the mail server refused it
 * (releaseEmailCode): until a new code is stored, the one before stays valid.
 */
export async function reserveEmailCode(q: Queryable, userId: string, now: Date): Promise<ReservedEmailCode> {
  const row = await lockEmailCode(q, userId);
  if (!row?.email) return { ok: false, reason: 'no address' };
  if (row.confirmed) return { ok: false, reason: 'confirmed' };
  const recipient = recipientKey(row.email);
  // Users naming one address take turns here (the preferences row lock is the user's alone).
  await q.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`email-code:${recipient}`]);
  const since = new Date(now.getTime() - DAY_MS).toISOString();
  const sent = (
    await q.query<{ mine: number; to_address: number; my_oldest: Date | null; address_oldest: Date | null }>(
      `SELECT count(*) FILTER (WHERE user_id = $1)::int AS mine, count(*) FILTER (WHERE recipient = $2)::int AS to_address,
              min(sent_at) FILTER (WHERE user_id = $1) AS my_oldest, min(sent_at) FILTER (WHERE recipient = $2) AS address_oldest
         FROM email_code_sends WHERE (user_id = $1 OR recipient = $2) AND sent_at > $3`,
      [userId, recipient, since],
    )
  ).rows[0]!;
  if (sent.mine >= EMAIL_CONFIRMATION.perDay)
    return { ok: false, reason: 'user limit', retryAt: new Date(sent.my_oldest!.getTime() + DAY_MS) };
  if (sent.to_address >= EMAIL_CONFIRMATION.perDay)
    return { ok: false, reason: 'address limit', retryAt: new Date(sent.address_oldest!.getTime() + DAY_MS) };
  const sendId = uuidv7();
  await q.query('INSERT INTO email_code_sends (id, user_id, recipient, sent_at) VALUES ($1, $2, $3, $4)', [
    sendId,
    userId,
    recipient,
    now.toISOString(),
  ]);
  const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
  return {
    ok: true,
    email: row.email,
    code,
    expiresAt: new Date(now.getTime() + EMAIL_CONFIRMATION.ttlMs),
    sendId,
  };
}

/** The code mailed becomes the one that confirms the address, unless the address changed meanwhile. */
export async function storeEmailCode(
  q: Queryable,
  userId: string,
  c: { email: string; code: string; expiresAt: Date },
): Promise<void> {
  await q.query(
    `UPDATE notification_preferences SET email_code_hash = $3, email_code_expires_at = $4, email_code_attempts = 0
      WHERE user_id = $1 AND email = $2 AND email_confirmed_at IS NULL`,
    [userId, c.email, emailCodeHash(userId, c.email, c.code), c.expiresAt.toISOString()],
  );
}

/** A code the mail server did not take is not counted against the limits. */
export async function releaseEmailCode(q: Queryable, sendId: string): Promise<void> {
  await q.query('DELETE FROM email_code_sends WHERE id = $1', [sendId]);
}

export type EmailConfirmation =
  | { outcome: 'confirmed' | 'already confirmed' | 'no address' | 'no code' | 'expired' }
  | { outcome: 'wrong'; attemptsLeft: number };

/**
 * Confirms the user's address when `code` is its pending code, unexpired. A wrong code counts; after
 * EMAIL_CONFIRMATION.maxAttempts the code is void. The caller commits whatever the outcome (the count).
 */
export async function confirmEmailCode(
  q: Queryable,
  userId: string,
  code: string,
  now: Date,
): Promise<EmailConfirmation> {
  const row = await lockEmailCode(q, userId);
  if (!row?.email) return { outcome: 'no address' };
  if (row.confirmed) return { outcome: 'already confirmed' };
  if (!row.code_hash || !row.expires_at || row.attempts >= EMAIL_CONFIRMATION.maxAttempts)
    return { outcome: 'no code' };
  if (row.expires_at.getTime() <= now.getTime()) return { outcome: 'expired' };
  if (emailCodeMatches(row.code_hash, userId, row.email, code)) {
    await q.query(
      `UPDATE notification_preferences SET email_confirmed_at = $2, email_code_hash = NULL, email_code_attempts = 0
        WHERE user_id = $1`,
      [userId, now.toISOString()],
    );
    return { outcome: 'confirmed' };
  }
  const attempts = row.attempts + 1;
  await q.query(
    `UPDATE notification_preferences SET email_code_attempts = $2,
            email_code_hash = CASE WHEN $3 THEN NULL ELSE email_code_hash END
      WHERE user_id = $1`,
    [userId, attempts, attempts >= EMAIL_CONFIRMATION.maxAttempts],
  );
  return { outcome: 'wrong', attemptsLeft: EMAIL_CONFIRMATION.maxAttempts - attempts };
}

export interface PushSubscriptionRow {
  id: string;
  user_id: string;
  endpoint: string;
  p256dh: string;
  auth: string;
  created_at: Date;
}

/**
 * The most push subscriptions a user keeps: a new one beyond them replaces the oldest. A browser subscribes
 * again with a new endpoint now and then and the old one lingers until its service says it is gone, so they
 * add up; each is sent to at every reminder (at once, each within NOTIFY_TIMEOUT_MS).
 */
export const PUSH_SUBSCRIPTIONS_MAX = 20;

export async function addPushSubscription(
  q: Queryable,
  userId: string,
  s: PushSubscriptionInput,
): Promise<PushSubscriptionRow> {
  const r = await q.query<PushSubscriptionRow>(
    `INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (user_id, endpoint) DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth
     RETURNING id::text AS id, user_id, endpoint, p256dh, auth, created_at`,
    [uuidv7(), userId, s.endpoint, s.keys.p256dh, s.keys.auth],
  );
  await q.query(
    `DELETE FROM push_subscriptions WHERE user_id = $1 AND id NOT IN (
       SELECT id FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2)`,
    [userId, PUSH_SUBSCRIPTIONS_MAX],
  );
  return r.rows[0]!;
}

export async function listPushSubscriptions(q: Queryable, userId: string): Promise<PushSubscriptionRow[]> {
  const r = await q.query<PushSubscriptionRow>(
    `SELECT id::text AS id, user_id, endpoint, p256dh, auth, created_at FROM push_subscriptions
      WHERE user_id = $1 ORDER BY created_at, id`,
    [userId],
  );
  return r.rows;
}

export async function deletePushSubscription(q: Queryable, userId: string, id: string): Promise<boolean> {
  const r = await q.query('DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2', [id, userId]);
  return r.rowCount > 0;
}

export const pushSubscriptionView = (s: PushSubscriptionRow) => ({
  id: s.id,
  endpoint: s.endpoint,
  created_at: iso(s.created_at),
});

// ---------------------------------------------------------------------------------------------------------
// Deliveries

export interface DeliveryRow {
  id: string;
  event_id: string;
  channel: Channel;
  user_id: string;
  payload: ReminderEventData;
  attempts: number;
  /** Push: the subscriptions (ids) this delivery has reached already. */
  push_sent_to: string[];
}

/** One delivery per (event, channel), pending unless `skippedBecause`; a duplicate event inserts nothing. Returns how many it added. */
export async function enqueueDeliveries(
  q: Queryable,
  eventId: string,
  data: ReminderEventData,
  /** `heldByQuietHours`: `at` is the end of the user's quiet hours (a change of them looks at it again). */
  channels: readonly { channel: Channel; at: Date; heldByQuietHours?: boolean }[],
  /** Why these are not to be sent: they are recorded `skipped` with it (a stale firing), not `pending`. */
  skippedBecause?: string,
): Promise<number> {
  let added = 0;
  for (const c of channels) {
    const r = await q.query(
      `INSERT INTO notification_deliveries (id, event_id, channel, user_id, payload, status, next_attempt_at, last_error,
         held_until)
       VALUES ($1, $2, $3, $4, $5, $7, $6, $8, CASE WHEN $9 THEN $6::timestamptz END)
       ON CONFLICT (event_id, channel) DO NOTHING`,
      [
        uuidv7(),
        eventId,
        c.channel,
        data.user_id,
        JSON.stringify(data),
        c.at.toISOString(),
        skippedBecause === undefined ? 'pending' : 'skipped',
        skippedBecause ?? null,
        skippedBecause === undefined && c.heldByQuietHours === true,
      ],
    );
    added += r.rowCount;
  }
  return added;
}

/**
 * Claims up to `limit` due deliveries for `holder`: counts the attempt and pushes next_attempt_at out by
 * `claimMs`, which is when another instance may take the row over if this one dies mid-send.
 */
export async function claimDeliveries(
  q: Queryable,
  holder: string,
  now: Date,
  limit: number,
  claimMs: number,
  perUser: number,
): Promise<DeliveryRow[]> {
  // At most `perUser` of one user's deliveries in flight, those this claim takes included: a user at the bound is
  // passed over (a hashed set of them, read through the index of the rows in flight), and within the claim each
  // user's rows are numbered after those in flight. One user's many slow receivers hold only their own slots.
  const r = await q.query<DeliveryRow>(
    `WITH busy AS (
       SELECT user_id, count(*) AS n FROM notification_deliveries
        WHERE status = 'pending' AND claimed_by IS NOT NULL AND next_attempt_at > $1::timestamptz
        GROUP BY user_id)
     UPDATE notification_deliveries SET attempts = attempts + 1, claimed_by = $3,
            next_attempt_at = $1::timestamptz + ($4::int * interval '1 millisecond')
      WHERE id IN (
        SELECT x.id FROM (
          SELECT c.id,
                 coalesce(b.n, 0) + row_number() OVER (PARTITION BY c.user_id ORDER BY c.next_attempt_at, c.id) AS taken
            FROM (SELECT d.id, d.user_id, d.next_attempt_at FROM notification_deliveries d
                   WHERE d.status = 'pending' AND d.next_attempt_at <= $1::timestamptz
                     AND d.user_id NOT IN (SELECT user_id FROM busy WHERE n >= $5)
                   ORDER BY d.next_attempt_at, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED) c
            LEFT JOIN busy b ON b.user_id = c.user_id) x
         WHERE x.taken <= $5)
      RETURNING id::text AS id, event_id, channel, user_id, payload, attempts, push_sent_to`,
    [now.toISOString(), limit, holder, claimMs, perUser],
  );
  return r.rows;
}

/**
 * Deletes the deliveries that are finished (sent, dead, skipped) and the in-app notifications that were read,
 * created before `before`, and each user's unread notifications beyond the newest `unreadMax`; pending
 * deliveries and the newest unread notifications stay, whatever their age. A user who never reads the in-app
 * inbox (webhooks only, say) made it grow without bound.
 */
export async function pruneNotifications(
  q: Queryable,
  before: Date,
  now: Date,
  unreadMax: number,
): Promise<{ deliveries: number; notifications: number; unreadOverMax: number }> {
  const r = await q.query<{ deliveries: string; notifications: string; unread: string }>(
    `WITH d AS (DELETE FROM notification_deliveries WHERE status <> 'pending' AND created_at < $1 RETURNING 1),
          n AS (DELETE FROM notifications WHERE read_at IS NOT NULL AND created_at < $1 RETURNING 1),
          u AS (DELETE FROM notifications WHERE id IN (
                  SELECT id FROM (
                    SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS newer
                      FROM notifications
                     WHERE read_at IS NULL AND user_id IN (
                       SELECT user_id FROM notifications WHERE read_at IS NULL GROUP BY user_id HAVING count(*) > $3)
                  ) ranked WHERE newer > $3)
                RETURNING 1),
          -- The confirmation codes' limits look back one day only.
          c AS (DELETE FROM email_code_sends WHERE sent_at < $2)
     SELECT (SELECT count(*) FROM d)::text AS deliveries, (SELECT count(*) FROM n)::text AS notifications,
            (SELECT count(*) FROM u)::text AS unread`,
    [before.toISOString(), new Date(now.getTime() - DAY_MS).toISOString(), unreadMax],
  );
  const row = r.rows[0]!;
  return {
    deliveries: Number(row.deliveries),
    notifications: Number(row.notifications),
    unreadOverMax: Number(row.unread),
  };
}

/** Records that a push delivery reached subscription `subscriptionId` (a retry does not send it there again). */
export async function markPushSent(q: Queryable, id: string, subscriptionId: string): Promise<void> {
  await q.query(
    `UPDATE notification_deliveries SET push_sent_to = array_append(push_sent_to, $2) WHERE id = $1`,
    [id, subscriptionId],
  );
}

/** Marks a claimed delivery done; false when the claim was lost (another instance took it over). */
export async function finishDelivery(
  q: Queryable,
  id: string,
  holder: string,
  outcome: { status: 'sent' | 'skipped' | 'dead'; at: Date; error?: string },
): Promise<boolean> {
  const r = await q.query(
    `UPDATE notification_deliveries SET status = $3, sent_at = CASE WHEN $3 = 'sent' THEN $4::timestamptz END,
            last_error = CASE WHEN $3 = 'sent' THEN NULL ELSE coalesce($5, last_error) END, claimed_by = NULL
      WHERE id = $1 AND claimed_by = $2 AND (status = 'pending' OR (status = 'skipped' AND $3 = 'sent'))`,
    [id, holder, outcome.status, outcome.at.toISOString(), outcome.error?.slice(0, 2000) ?? null],
  );
  return r.rowCount > 0;
}

/** Lets go of the claim on a delivery that is no longer pending (dropped while it was being sent). */
export async function releaseClaim(q: Queryable, id: string, holder: string): Promise<void> {
  await q.query(
    `UPDATE notification_deliveries SET claimed_by = NULL WHERE id = $1 AND claimed_by = $2 AND status <> 'pending'`,
    [id, holder],
  );
}

/** Puts a claimed delivery back for `at`; `countAttempt` false undoes the claim's attempt (quiet hours). */
export async function deferDelivery(
  q: Queryable,
  id: string,
  holder: string,
  at: Date,
  /** `heldByQuietHours`: `at` is the end of the user's quiet hours; otherwise a retry's time. */
  opts: { error?: string; countAttempt: boolean; heldByQuietHours?: boolean },
): Promise<boolean> {
  const r = await q.query(
    `UPDATE notification_deliveries SET next_attempt_at = $3, claimed_by = NULL,
            attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END, last_error = coalesce($5, last_error),
            held_until = CASE WHEN $6 THEN $3::timestamptz END
      WHERE id = $1 AND claimed_by = $2 AND status = 'pending'`,
    [
      id,
      holder,
      at.toISOString(),
      opts.countAttempt,
      opts.error?.slice(0, 2000) ?? null,
      opts.heldByQuietHours ?? false,
    ],
  );
  return r.rowCount > 0;
}

/** When a delivery's firing of its reminder happened (older events carry no `triggered_at`: when it was due). */
const FIRED_AT = `coalesce(payload->>'triggered_at', payload->>'remind_at')::timestamptz`;

/** When a firing happened, as `FIRED_AT` reads it from a delivery's payload. */
export const firedAt = (data: ReminderEventData): string => data.triggered_at ?? data.remind_at;

/**
 * Drops the deliveries of a reminder's firings up to `upTo` that have not been sent: the reminder was
 * dismissed, or its task completed, deleted or moved (then the dead ones too, so a retry does not send them), or
 * it fired again (snoozed; `except` is that firing's event, whose own deliveries stay). One being sent keeps its
 * claim: a send that succeeds is still recorded as sent (finishDelivery), and one that fails is not retried (its
 * retry would have gone out for a task already done). A later firing's deliveries stay: an event handled late (a
 * redelivery, a DLQ replay) does not drop what came after it. Returns how many it dropped.
 */
export async function cancelPendingDeliveries(
  q: Queryable,
  userId: string,
  reminderId: string,
  reason: string,
  opts: { upTo: string; dead?: boolean; except?: string },
): Promise<number> {
  const r = await q.query(
    `UPDATE notification_deliveries SET status = 'skipped', last_error = $3
      WHERE user_id = $1 AND payload->>'reminder_id' = $2
        AND (status = 'pending' OR ($4 AND status = 'dead'))
        AND ($5::text IS NULL OR event_id <> $5::text) AND ${FIRED_AT} <= $6::timestamptz`,
    [userId, reminderId, reason, opts.dead === true, opts.except ?? null, opts.upTo],
  );
  return r.rowCount;
}

/** Whether a firing of the reminder later than `after` already has deliveries (it was handled first). */
export async function laterFiringHandled(
  q: Queryable,
  userId: string,
  reminderId: string,
  after: string,
): Promise<boolean> {
  const r = await q.query(
    `SELECT 1 FROM notification_deliveries
      WHERE user_id = $1 AND payload->>'reminder_id' = $2 AND ${FIRED_AT} > $3::timestamptz LIMIT 1`,
    [userId, reminderId, after],
  );
  return r.rows.length > 0;
}

// ---------------------------------------------------------------------------------------------------------
// In-app inbox

export interface NotificationRow {
  id: string;
  reminder_id: string;
  task_id: string;
  title: string;
  body: string;
  due_at: Date | null;
  remind_at: Date;
  created_at: Date;
  read_at: Date | null;
}

const NOTIFICATION_COLUMNS = `id::text AS id, reminder_id, task_id::text AS task_id, title, body, due_at, remind_at,
  created_at, read_at`;

export const notificationView = (n: NotificationRow): InAppNotification => ({
  id: n.id,
  reminder_id: n.reminder_id,
  task_id: n.task_id,
  title: n.title,
  body: n.body,
  due_at: iso(n.due_at),
  remind_at: iso(n.remind_at)!,
  created_at: iso(n.created_at)!,
  read_at: iso(n.read_at),
});

/** Stores the in-app notification of a delivery; returns it, or nothing when the delivery already has one. */
export async function insertInApp(
  q: Queryable,
  delivery: DeliveryRow,
  content: { title: string; body: string },
  now: Date,
): Promise<NotificationRow | undefined> {
  const d = delivery.payload;
  const r = await q.query<NotificationRow>(
    `INSERT INTO notifications (id, user_id, delivery_id, reminder_id, task_id, title, body, due_at, remind_at, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (delivery_id) DO NOTHING
     RETURNING ${NOTIFICATION_COLUMNS}`,
    [
      uuidv7(),
      delivery.user_id,
      delivery.id,
      d.reminder_id,
      d.task_id,
      content.title,
      content.body,
      d.due_at,
      d.remind_at,
      now.toISOString(),
    ],
  );
  return r.rows[0];
}

export async function listNotifications(
  q: Queryable,
  userId: string,
  opts: { unreadOnly: boolean; limit: number },
): Promise<{ items: NotificationRow[]; unread_count: number }> {
  const items = await q.query<NotificationRow>(
    `SELECT ${NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)
      ORDER BY created_at DESC, id DESC LIMIT $3`,
    [userId, opts.unreadOnly, opts.limit],
  );
  const unread = await q.query<{ n: string }>(
    'SELECT count(*)::text AS n FROM notifications WHERE user_id = $1 AND read_at IS NULL',
    [userId],
  );
  return { items: items.rows, unread_count: Number(unread.rows[0]?.n ?? 0) };
}

export async function markRead(
  q: Queryable,
  userId: string,
  id: string,
  now: Date,
): Promise<NotificationRow | undefined> {
  const r = await q.query<NotificationRow>(
    `UPDATE notifications SET read_at = coalesce(read_at, $3) WHERE id = $1 AND user_id = $2
     RETURNING ${NOTIFICATION_COLUMNS}`,
    [id, userId, now.toISOString()],
  );
  return r.rows[0];
}

export const DELIVERY_STATUSES = ['pending', 'sent', 'dead', 'skipped'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/** A delivery as GET /api/notifications/deliveries shows it: one reminder on one channel, and how it went. */
export interface DeliveryView {
  id: string;
  channel: Channel;
  status: DeliveryStatus;
  reminder_id: string;
  task_id: string;
  title: string;
  attempts: number;
  last_error: string | null;
  next_attempt_at: string | null;
  sent_at: string | null;
  created_at: string;
}

const DELIVERY_VIEW_COLUMNS = `id::text AS id, channel, status, payload->>'reminder_id' AS reminder_id,
  payload->>'task_id' AS task_id, payload->>'title' AS title, attempts, last_error,
  CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, sent_at, created_at`;

type DeliveryViewRow = Omit<DeliveryView, 'next_attempt_at' | 'sent_at' | 'created_at'> &
  Record<'next_attempt_at' | 'sent_at', Date | null> & { created_at: Date };

const deliveryView = (r: DeliveryViewRow): DeliveryView => ({
  ...r,
  next_attempt_at: iso(r.next_attempt_at),
  sent_at: iso(r.sent_at),
  created_at: iso(r.created_at)!,
});

/** A user's deliveries, newest first, of one status and channel when given. */
export async function listDeliveries(
  q: Queryable,
  userId: string,
  opts: { status?: DeliveryStatus | undefined; channel?: Channel | undefined; limit: number },
): Promise<DeliveryView[]> {
  const r = await q.query<DeliveryViewRow>(
    `SELECT ${DELIVERY_VIEW_COLUMNS} FROM notification_deliveries
      WHERE user_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR channel = $3)
      ORDER BY created_at DESC, id DESC LIMIT $4`,
    [userId, opts.status ?? null, opts.channel ?? null, opts.limit],
  );
  return r.rows.map(deliveryView);
}

/**
 * Sends a dead delivery again: pending, due now, its attempts counted from zero (a push goes only to the
 * devices it has not reached). Resolves the delivery, 'not dead' when it is another status, or undefined when
 * the user has none with that id.
 */
export async function retryDeadDelivery(
  q: Queryable,
  userId: string,
  id: string,
  now: Date,
): Promise<DeliveryView | 'not dead' | undefined> {
  const r = await q.query<DeliveryViewRow>(
    `UPDATE notification_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3, claimed_by = NULL
      WHERE id = $1 AND user_id = $2 AND status = 'dead' RETURNING ${DELIVERY_VIEW_COLUMNS}`,
    [id, userId, now.toISOString()],
  );
  if (r.rows[0]) return deliveryView(r.rows[0]);
  const exists = await q.query('SELECT 1 FROM notification_deliveries WHERE id = $1 AND user_id = $2', [
    id,
    userId,
  ]);
  return exists.rows.length ? 'not dead' : undefined;
}
