/**
 * Notification rules (pure): preference validation, quiet hours, webhook signatures, retry delays and the
 * push-subscription shape. The notifications service persists and delivers what these functions decide.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Temporal } from 'temporal-polyfill';
import type { FieldIssue, Result } from './errors.ts';
import { fail, ok } from './errors.ts';
import { isTimeZone } from './time.ts';
import { TRIMMED_SPACE, codePoints } from './text.ts';

export const CHANNELS = ['email', 'push', 'in_app', 'webhook'] as const;
export type Channel = (typeof CHANNELS)[number];
/** Quiet hours hold back the channels that interrupt; the in-app inbox is silent and is filled at once. */
export const QUIET_CHANNELS: readonly Channel[] = ['email', 'push', 'webhook'];

export interface QuietHours {
  /** Local wall-clock times `HH:MM`; a window that ends before it starts spans midnight. */
  start: string;
  end: string;
  timezone: string;
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
/** A push subscription key (base64url, padding allowed). */
export const PUSH_KEY_PATTERN = '^[A-Za-z0-9_-]+={0,2}$';
export const PUSH_KEY_LENGTH = { min: 8, max: 200 } as const;

const HHMM = new RegExp(HHMM_PATTERN);
const EMAIL = new RegExp(EMAIL_PATTERN);

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const WEBHOOK_URL = new RegExp(WEBHOOK_URL_PATTERN);
const PUSH_ENDPOINT = new RegExp(PUSH_ENDPOINT_PATTERN);

/** An http(s) URL of the documented form that the URL parser reads too. */
export function isWebhookUrl(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 2000 && WEBHOOK_URL.test(v) && URL.canParse(v);
}

const PREF_FIELDS = ['email', 'channels', 'quiet_hours', 'webhook_url', 'webhook_secret'];

/** Validates a (partial) preferences body of `PUT /api/notifications/preferences`. */
export function validatePreferencesPatch(input: unknown): Result<PreferencesPatch> {
  if (!isObject(input)) return fail([{ path: '', message: 'body must be a JSON object' }]);
  const issues: FieldIssue[] = [];
  const out: PreferencesPatch = {};
  for (const k of Object.keys(input))
    if (!PREF_FIELDS.includes(k))
      issues.push({ path: k, message: `unknown field; allowed: ${PREF_FIELDS.join(', ')}` });
  if (input.email !== undefined) {
    const e = input.email;
    if (e === null) out.email = null;
    else if (typeof e === 'string' && e.length <= 254 && EMAIL.test(e)) out.email = e;
    else issues.push({ path: 'email', message: 'must be an email address or null' });
  }
  if (input.channels !== undefined) {
    const c = input.channels;
    if (!isObject(c))
      issues.push({ path: 'channels', message: `must be an object of ${CHANNELS.join(', ')}` });
    else {
      const channels: Partial<Record<Channel, boolean>> = {};
      for (const [k, v] of Object.entries(c)) {
        if (!(CHANNELS as readonly string[]).includes(k))
          issues.push({ path: `channels.${k}`, message: `unknown channel; allowed: ${CHANNELS.join(', ')}` });
        else if (typeof v !== 'boolean')
          issues.push({ path: `channels.${k}`, message: 'must be true or false' });
        else channels[k as Channel] = v;
      }
      out.channels = channels;
    }
  }
  if (input.quiet_hours !== undefined) {
    const q = input.quiet_hours;
    if (q === null) out.quiet_hours = null;
    else if (!isObject(q))
      issues.push({
        path: 'quiet_hours',
        message: 'must be { start: "HH:MM", end: "HH:MM", timezone } or null',
      });
    else {
      const before = issues.length;
      for (const k of Object.keys(q))
        if (!['start', 'end', 'timezone'].includes(k))
          issues.push({ path: `quiet_hours.${k}`, message: 'unknown field; allowed: start, end, timezone' });
      if (typeof q.start !== 'string' || !HHMM.test(q.start))
        issues.push({ path: 'quiet_hours.start', message: 'must be a local time HH:MM (24 h)' });
      if (typeof q.end !== 'string' || !HHMM.test(q.end))
        issues.push({ path: 'quiet_hours.end', message: 'must be a local time HH:MM (24 h)' });
      const tz = q.timezone ?? 'UTC';
      if (!isTimeZone(tz))
        issues.push({
          path: 'quiet_hours.timezone',
          message: 'must be an IANA time zone such as Europe/Berlin',
        });
      if (issues.length === before)
        out.quiet_hours = { start: q.start as string, end: q.end as string, timezone: tz as string };
    }
  }
  if (input.webhook_url !== undefined) {
    if (input.webhook_url === null) out.webhook_url = null;
    else if (isWebhookUrl(input.webhook_url)) out.webhook_url = input.webhook_url;
    else issues.push({ path: 'webhook_url', message: 'must be an http(s) URL or null' });
  }
  if (input.webhook_secret !== undefined) {
    const s = input.webhook_secret;
    const length = typeof s === 'string' ? codePoints(s) : 0;
    if (s === null) out.webhook_secret = null;
    else if (typeof s === 'string' && length >= 16 && length <= 256) out.webhook_secret = s;
    else issues.push({ path: 'webhook_secret', message: 'must be a string of 16 to 256 characters' });
  }
  return issues.length ? fail(issues) : ok(out);
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * When `now` falls in the quiet hours, the instant they end (the next local `end` time); otherwise null.
 * Local times are evaluated in the window's zone; on a DST gap the end moves later (Temporal "compatible").
 */
export function quietHoursEnd(now: Date, q: QuietHours): Date | null {
  const start = minutesOf(q.start);
  const end = minutesOf(q.end);
  if (start === end) return null;
  const local = Temporal.Instant.fromEpochMilliseconds(now.getTime()).toZonedDateTimeISO(q.timezone);
  const m = local.hour * 60 + local.minute;
  const inside = start < end ? m >= start && m < end : m >= start || m < end;
  if (!inside) return null;
  let endAt = local.withPlainTime({ hour: Math.floor(end / 60), minute: end % 60 });
  if (Temporal.ZonedDateTime.compare(endAt, local) <= 0) endAt = endAt.add({ days: 1 });
  return new Date(endAt.epochMilliseconds);
}

/** `sha256=<hex HMAC-SHA256 of the raw body with the user's webhook secret>` (X-Taskflow-Signature). */
export function webhookSignature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** Constant-time check of a received signature (what a webhook receiver does). */
export function verifyWebhookSignature(secret: string, body: string, signature: string): boolean {
  const expected = Buffer.from(webhookSignature(secret, body));
  const got = Buffer.from(signature);
  return expected.length === got.length && timingSafeEqual(expected, got);
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

export interface PushSubscriptionInput {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

const B64URL = new RegExp(PUSH_KEY_PATTERN);

/** The browser's `PushSubscription.toJSON()`: `{ endpoint, keys: { p256dh, auth } }` (https endpoint). */
export function validatePushSubscription(input: unknown): Result<PushSubscriptionInput> {
  if (!isObject(input)) return fail([{ path: '', message: 'body must be a JSON object' }]);
  const issues: FieldIssue[] = [];
  const endpoint = input.endpoint;
  if (
    typeof endpoint !== 'string' ||
    endpoint.length > 2000 ||
    !PUSH_ENDPOINT.test(endpoint) ||
    !URL.canParse(endpoint)
  )
    issues.push({ path: 'endpoint', message: 'must be the https URL of the push service' });
  const keys = input.keys;
  if (!isObject(keys)) issues.push({ path: 'keys', message: 'must be { p256dh, auth }' });
  else {
    for (const k of ['p256dh', 'auth'] as const) {
      const v = keys[k];
      if (
        typeof v !== 'string' ||
        v.length < PUSH_KEY_LENGTH.min ||
        v.length > PUSH_KEY_LENGTH.max ||
        !B64URL.test(v)
      )
        issues.push({ path: `keys.${k}`, message: 'must be a base64url string' });
    }
  }
  if (issues.length) return fail(issues);
  const k = keys as { p256dh: string; auth: string };
  return ok({ endpoint: endpoint as string, keys: { p256dh: k.p256dh, auth: k.auth } });
}
