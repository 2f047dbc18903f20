/**
 * Notification rules (pure): preference validation, quiet hours, webhook signatures, retry delays and the
 * push-subscription shape. The notifications service persists and delivers what these functions decide.
 */
import { createHash, createHmac, ECDH, timingSafeEqual } from 'node:crypto';
import { Temporal } from 'temporal-polyfill';
import * as z from 'zod';
import type { FieldIssue, Result } from './errors.ts';
import { fail, ok } from './errors.ts';
import { isObject, parseBody, parseField, refuse } from './fields.ts';
import { timeZoneDoc } from './task-fields.ts';
import { canonicalTimeZone, isTimeZone } from './time.ts';
import { TRIMMED_SPACE, codePoints } from './text.ts';

export const CHANNELS = ['email', 'push', 'in_app', 'webhook'] as const;
export type Channel = (typeof CHANNELS)[number];
/** Quiet hours hold back the channels that interrupt; the in-app inbox is silent and is filled at once. */
export const QUIET_CHANNELS: readonly Channel[] = ['email', 'push', 'webhook'];

export interface QuietHours {
  /** Local wall-clock times `HH:MM`; a window that ends before it starts spans midnight. */
  start: string;
  end: string;
  /** IANA zone of those times; null: the user's own zone (GET /api/me/settings) when it is evaluated. */
  timezone: string | null;
}

export interface NotificationPreferences {
  email: string | null;
  channels: Record<Channel, boolean>;
  quiet_hours: QuietHours | null;
  webhook_url: string | null;
}

export interface PreferencesPatch {
  email?: string | null;
  channels?: Partial<Record<Channel, boolean>>;
  quiet_hours?: QuietHours | null;
  webhook_url?: string | null;
  webhook_secret?: string | null;
}

export const DEFAULT_PREFERENCES: NotificationPreferences = {
  email: null,
  channels: { email: true, push: true, in_app: true, webhook: true },
  quiet_hours: null,
  webhook_url: null,
};

/*
 * The grammars of these fields, as JSON Schema patterns for the OpenAPI document and as the checks below, so
 * the two cannot differ. Character classes are spelled out (no \s): ECMAScript and Python, which checks the
 * document, disagree on what white space is.
 */
export const HHMM_PATTERN = '^(?:[01][0-9]|2[0-3]):[0-5][0-9]$';
// Neither white space (as trim sees it) nor any other control character.
const EMAIL_ATOM = `[^@<>()\\[\\]\\\\,;:"\\u0000-\\u001f\\u007f-\\u009f${TRIMMED_SPACE}]+`;
export const EMAIL_PATTERN = `^${EMAIL_ATOM}@${EMAIL_ATOM}\\.${EMAIL_ATOM}$`;
/**
 * A URL as the document states it and the checks below require: an IPv4 address or a host name of letters,
 * digits and single hyphens ending in a label that starts with a letter (the WHATWG parser reads a numeric last
 * label as an IPv4 address, and checks xn-- labels as punycode), a port, then a path, query and fragment of RFC 3986
 * characters (percent signs only as %XX escapes).
 */
const URL_CHAR = "(?:[A-Za-z0-9._~:@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})";
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';
const PORT = '(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])';
// Labels of letters and digits joined by single hyphens: no punycode (xn--), which the parser checks further.
const LABEL = '[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*';
const LAST_LABEL = '[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*';
const HOST = `(?:(?:${LABEL}\\.)*${LAST_LABEL}|${OCTET}(?:\\.${OCTET}){3})`;
const URL_AFTER_SCHEME =
  `${HOST}(?::${PORT})?` +
  `(?:/(?:${URL_CHAR}|/)*)?(?:\\?(?:${URL_CHAR}|[/?])*)?(?:#(?:${URL_CHAR}|[/?])*)?$`;
export const WEBHOOK_URL_PATTERN = `^https?://${URL_AFTER_SCHEME}`;
export const PUSH_ENDPOINT_PATTERN = `^https://${URL_AFTER_SCHEME}`;
/**
 * A push subscription's keys, base64url (padding allowed) of what RFC 8291 says they are: `p256dh` the
 * browser's P-256 public key, an uncompressed point (65 bytes, the first 0x04: the text begins with `B`), `auth`
 * a 16-byte secret. Any other was taken, and every push to it failed until the delivery was dead.
 */
export const PUSH_KEY_PATTERNS = {
  p256dh: '^B[A-Za-z0-9_-]{86}=?$',
  auth: '^[A-Za-z0-9_-]{22}(?:==)?$',
} as const;

const HHMM = new RegExp(HHMM_PATTERN);
const EMAIL = new RegExp(EMAIL_PATTERN);

const WEBHOOK_URL = new RegExp(WEBHOOK_URL_PATTERN);
const PUSH_ENDPOINT = new RegExp(PUSH_ENDPOINT_PATTERN);

/** An http(s) URL of the documented form that the URL parser reads too. */
export function isWebhookUrl(v: unknown): v is string {
  return (
    typeof v === 'string' && v.length <= PREFERENCE_LIMITS.urlMax && WEBHOOK_URL.test(v) && URL.canParse(v)
  );
}

/** The longest e-mail address (RFC 5321 path), URL, and the bounds of a webhook secret, in code points. */
export const PREFERENCE_LIMITS = { emailMax: 254, urlMax: 2000, secretMin: 16, secretMax: 256 } as const;

/**
 * The fields of `PUT /api/notifications/preferences` (ADR 0014): each validates, and documents itself for
 * the OpenAPI body. A field left out keeps its value; null clears the ones that can be cleared.
 */
export const PREFERENCE_FIELDS = {
  // No format 'email': validators of it differ (some refuse non-ASCII); the pattern is the rule.
  email: z
    .unknown()
    .check((ctx) => {
      const e = ctx.value;
      if (e !== null && !(typeof e === 'string' && e.length <= PREFERENCE_LIMITS.emailMax && EMAIL.test(e)))
        refuse(ctx, 'must be an email address or null');
    })
    .meta({
      type: ['string', 'null'],
      pattern: EMAIL_PATTERN,
      maxLength: PREFERENCE_LIMITS.emailMax,
      description: 'an e-mail address',
    }),
  channels: z
    .unknown()
    .transform((c, ctx) => {
      if (!isObject(c)) return refuse(ctx, `must be an object of ${CHANNELS.join(', ')}`);
      const channels: Partial<Record<Channel, boolean>> = {};
      for (const [k, v] of Object.entries(c)) {
        if (!(CHANNELS as readonly string[]).includes(k))
          refuse(ctx, `unknown channel; allowed: ${CHANNELS.join(', ')}`, [k]);
        else if (typeof v !== 'boolean') refuse(ctx, 'must be true or false', [k]);
        else channels[k as Channel] = v;
      }
      return channels;
    })
    .meta({
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(CHANNELS.map((c) => [c, { type: 'boolean' }])),
    }),
  quiet_hours: z
    .unknown()
    .transform((q, ctx): QuietHours | null | undefined => {
      if (q === null) return null;
      if (!isObject(q)) {
        refuse(ctx, 'must be { start: "HH:MM", end: "HH:MM", timezone } or null');
        return undefined;
      }
      const before = ctx.issues.length;
      for (const k of Object.keys(q))
        if (!['start', 'end', 'timezone'].includes(k))
          refuse(ctx, 'unknown field; allowed: start, end, timezone', [k]);
      for (const k of ['start', 'end'] as const)
        if (typeof q[k] !== 'string' || !HHMM.test(q[k]))
          refuse(ctx, 'must be a local time HH:MM (24 h)', [k]);
      const tz = q.timezone ?? null;
      if (tz !== null && !isTimeZone(tz))
        refuse(ctx, 'must be an IANA time zone such as Europe/Berlin, or null', ['timezone']);
      if (ctx.issues.length !== before) return undefined;
      // Stored as IANA spells it (`europe/berlin` is `Europe/Berlin`), as the user's own zone is.
      return {
        start: q.start as string,
        end: q.end as string,
        timezone: tz === null ? null : (canonicalTimeZone(tz as string) ?? (tz as string)),
      };
    })
    .meta({
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['start', 'end'],
      description: 'local times; start = end means no quiet hours',
      properties: {
        start: { type: 'string', pattern: HHMM_PATTERN, examples: ['22:00'] },
        end: { type: 'string', pattern: HHMM_PATTERN, examples: ['07:00'] },
        timezone: timeZoneDoc(
          "an IANA time zone (null or left out: the user's own, from /api/me/settings)",
          true,
        ),
      },
    }),
  webhook_url: z
    .unknown()
    .check((ctx) => {
      if (ctx.value !== null && !isWebhookUrl(ctx.value)) refuse(ctx, 'must be an http(s) URL or null');
    })
    .meta({
      type: ['string', 'null'],
      format: 'uri',
      pattern: WEBHOOK_URL_PATTERN,
      maxLength: PREFERENCE_LIMITS.urlMax,
    }),
  webhook_secret: z
    .unknown()
    .check((ctx) => {
      const s = ctx.value;
      const length = typeof s === 'string' ? codePoints(s) : 0;
      if (s !== null && !(length >= PREFERENCE_LIMITS.secretMin && length <= PREFERENCE_LIMITS.secretMax))
        refuse(
          ctx,
          `must be a string of ${PREFERENCE_LIMITS.secretMin} to ${PREFERENCE_LIMITS.secretMax} characters`,
        );
    })
    .meta({
      type: ['string', 'null'],
      minLength: PREFERENCE_LIMITS.secretMin,
      maxLength: PREFERENCE_LIMITS.secretMax,
      description:
        'the key of the webhook signature; null, or a webhook_url without a secret, gets a new generated one (shown once in the answer): a webhook is always signed',
    }),
} as const;

/** Validates a (partial) preferences body of `PUT /api/notifications/preferences`. */
export function validatePreferencesPatch(input: unknown): Result<PreferencesPatch> {
  return parseBody(input, PREFERENCE_FIELDS) as Result<PreferencesPatch>;
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * When `now` falls in the quiet hours, the instant they end (the next local `end` time); otherwise null.
 * Local times are evaluated in the window's zone, or `userZone` when it names none; on a DST gap the end moves
 * later (Temporal "compatible").
 */
export function quietHoursEnd(now: Date, q: QuietHours, userZone = 'UTC'): Date | null {
  const start = minutesOf(q.start);
  const end = minutesOf(q.end);
  if (start === end) return null;
  const zone = q.timezone ?? userZone;
  const local = Temporal.Instant.fromEpochMilliseconds(now.getTime()).toZonedDateTimeISO(zone);
  const m = local.hour * 60 + local.minute;
  const inside = start < end ? m >= start && m < end : m >= start || m < end;
  if (!inside) return null;
  const endTime = { hour: Math.floor(end / 60), minute: end % 60 };
  let endAt = local.withPlainTime(endTime);
  if (Temporal.ZonedDateTime.compare(endAt, local) <= 0) {
    // On a fall-back day the end's wall time comes twice: in the repeated hour, its second instant is still
    // ahead (taking the first, already past, held notifications a day too long).
    const later = local
      .toPlainDateTime()
      .withPlainTime(endTime)
      .toZonedDateTime(zone, { disambiguation: 'later' });
    endAt = Temporal.ZonedDateTime.compare(later, local) > 0 ? later : endAt.add({ days: 1 });
  }
  return new Date(endAt.epochMilliseconds);
}

/** `sha256=<hex HMAC-SHA256 of the raw body with the user's webhook secret>` (X-Taskflow-Signature). */
export function webhookSignature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** Constant-time check of a received signature (what a webhook receiver does). */
export function verifyWebhookSignature(secret: string, body: string, signature: string): boolean {
  return sameBytes(Buffer.from(webhookSignature(secret, body)), Buffer.from(signature));
}

/** `a` and `b` are equal, compared in constant time (timingSafeEqual throws on lengths that differ). */
const sameBytes = (a: Buffer, b: Buffer) => a.length === b.length && timingSafeEqual(a, b);

/**
 * An email address is confirmed before a reminder is mailed to it (double opt-in): the user types back a code
 * mailed to it. Without that, any user could make the operator's mail server send to any address.
 */
export const EMAIL_CONFIRMATION = {
  /** A code lasts an hour. */
  ttlMs: 3_600_000,
  /** Wrong codes before a code is void (a new one must be asked for): 5 guesses in a million per code. */
  maxAttempts: 5,
  /**
   * Codes mailed in any 24 hours for one user, and to one address whatever the users (several accounts naming
   * one victim): each is a message to an address someone typed.
   */
  perDay: 5,
} as const;
export const EMAIL_CODE_PATTERN = '^[0-9]{6}$';
const EMAIL_CODE = new RegExp(EMAIL_CODE_PATTERN);

/** The body of `POST /api/notifications/email/confirm`. */
export const CONFIRM_EMAIL_FIELDS = {
  code: z
    .unknown()
    .check((ctx) => {
      if (typeof ctx.value !== 'string' || !EMAIL_CODE.test(ctx.value))
        refuse(ctx, 'must be the 6 digits of the code mailed to the address');
    })
    .meta({ type: 'string', pattern: EMAIL_CODE_PATTERN, description: 'the code mailed to the address' }),
} as const;

export function validateEmailCode(input: unknown): Result<{ code: string }> {
  return parseBody(input, CONFIRM_EMAIL_FIELDS, { required: ['code'] }) as Result<{ code: string }>;
}

/** A code as it is stored: bound to its user and address, so it confirms nothing else, and not readable back. */
export function emailCodeHash(userId: string, email: string, code: string): string {
  return createHash('sha256')
    .update(JSON.stringify([userId, email, code]))
    .digest('hex');
}

/** Whether `code` is the one whose hash is stored for this user and address (constant time). */
export function emailCodeMatches(stored: string, userId: string, email: string, code: string): boolean {
  return sameBytes(Buffer.from(stored, 'hex'), Buffer.from(emailCodeHash(userId, email, code), 'hex'));
}

/**
 * Delay before retry number `attempt` (1 = after the first failure): exponential, capped, with "equal
 * jitter" (between half and all of the step), so retries spread out but never come back almost at once.
 */
export function retryDelayMs(
  attempt: number,
  policy: { baseMs: number; maxMs: number },
  random: () => number = Math.random,
): number {
  const step = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(step / 2 + (step / 2) * random());
}

/**
 * The wait a `Retry-After` header asks for (RFC 9110: delay-seconds, or an HTTP-date), in ms from `now`;
 * undefined when there is none or it cannot be read.
 */
export function retryAfterMs(value: string | undefined, now: Date): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // An HTTP-date starts with its day's name ("Sun, 01 Mar 2026 12:10:00 GMT"); Date.parse takes "-5" too.
  const at = /^[A-Za-z]{3}/.test(v) ? Date.parse(v) : Number.NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - now.getTime());
}

export interface PushSubscriptionInput {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** Whether base64url `key` is a point of the P-256 curve (a 65-byte text of the right shape may not be). */
function onP256(key: string): boolean {
  try {
    ECDH.convertKey(Buffer.from(key, 'base64url'), 'prime256v1');
    return true;
  } catch {
    return false;
  }
}

const PUSH_KEYS = {
  p256dh: new RegExp(PUSH_KEY_PATTERNS.p256dh),
  auth: new RegExp(PUSH_KEY_PATTERNS.auth),
};

/** The fields of a push subscription, the browser's `PushSubscription.toJSON()` (ADR 0014). */
export const PUSH_SUBSCRIPTION_FIELDS = {
  endpoint: z
    .unknown()
    .check((ctx) => {
      const e = ctx.value;
      if (
        typeof e !== 'string' ||
        e.length > PREFERENCE_LIMITS.urlMax ||
        !PUSH_ENDPOINT.test(e) ||
        !URL.canParse(e)
      )
        refuse(ctx, 'must be the https URL of the push service');
    })
    .meta({
      type: 'string',
      format: 'uri',
      pattern: PUSH_ENDPOINT_PATTERN,
      maxLength: PREFERENCE_LIMITS.urlMax,
    }),
  keys: z
    .unknown()
    .transform((keys, ctx) => {
      if (!isObject(keys)) return refuse(ctx, 'must be { p256dh, auth }');
      for (const k of ['p256dh', 'auth'] as const) {
        const v = keys[k];
        if (typeof v !== 'string' || !PUSH_KEYS[k].test(v) || (k === 'p256dh' && !onP256(v)))
          refuse(
            ctx,
            k === 'p256dh'
              ? "must be the browser's P-256 public key: base64url of 65 bytes, the first 0x04 (87 characters, starting with B)"
              : 'must be the 16-byte auth secret in base64url (22 characters)',
            [k],
          );
      }
      return { p256dh: keys.p256dh as string, auth: keys.auth as string };
    })
    .meta({
      type: 'object',
      required: ['p256dh', 'auth'],
      properties: {
        p256dh: {
          type: 'string',
          pattern: PUSH_KEY_PATTERNS.p256dh,
          description: "the browser's P-256 public key, a point of the curve (uncompressed)",
        },
        auth: { type: 'string', pattern: PUSH_KEY_PATTERNS.auth },
      },
    }),
} as const;

/**
 * `{ endpoint, keys: { p256dh, auth } }` (https endpoint). Other fields of the browser's object
 * (expirationTime) are let through unread.
 */
export function validatePushSubscription(input: unknown): Result<PushSubscriptionInput> {
  if (!isObject(input)) return fail([{ path: '', message: 'body must be a JSON object' }]);
  const issues: FieldIssue[] = [];
  const endpoint = parseField('endpoint', PUSH_SUBSCRIPTION_FIELDS.endpoint, input.endpoint, issues);
  const keys = parseField('keys', PUSH_SUBSCRIPTION_FIELDS.keys, input.keys, issues);
  if (issues.length) return fail(issues);
  return ok({ endpoint: endpoint as string, keys: keys as PushSubscriptionInput['keys'] });
}
