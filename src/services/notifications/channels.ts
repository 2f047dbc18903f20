/**
 * The outbound channels: email over SMTP (nodemailer), Web Push with VAPID (web-push) and signed webhooks
 * (node:http, public addresses only: outbound.ts). Each `send` resolves when the other side accepted the message and throws otherwise; the delivery
 * loop retries (not a RefusedError or a BlockedAddressError: those are dead at once). The in-app channel is a database write and lives in the delivery loop.
 */
import type { Agent } from 'node:https';
import { Temporal } from 'temporal-polyfill';
import type { Transporter } from 'nodemailer';
import type WebPush from 'web-push';
import type { ReminderEventData } from '../../contracts/events.ts';
import { retryAfterMs, webhookSignature } from '../../domain/notifications.ts';
import { BlockedAddressError, post, type PostResult } from './outbound.ts';
import { errorMessage } from '../../error-text.ts';
import { codePoints, firstCodePoints } from '../../domain/text.ts';

export interface MessageContent {
  subject: string;
  text: string;
}

/** `2026-12-05 09:00 Europe/Paris`: an instant as a reader in `timeZone` reads it (UTC if that is not a zone). */
function localTime(iso: string, timeZone: string): string {
  let at: Temporal.ZonedDateTime;
  try {
    at = Temporal.Instant.from(iso).toZonedDateTimeISO(timeZone);
  } catch {
    at = Temporal.Instant.from(iso).toZonedDateTimeISO('UTC');
  }
  return `${at.toPlainDate().toString()} ${at.toPlainTime().toString({ smallestUnit: 'minute' })} ${at.timeZoneId}`;
}

/**
 * What a reminder says, on every channel: the due time in the user's own zone (`timeZone`); `link`
 * (PUBLIC_URL) points the reader at the task board.
 */
export function reminderContent(
  d: ReminderEventData,
  opts: { timeZone?: string; link?: string | undefined } = {},
): MessageContent {
  const link = opts.link;
  const due = d.due_at ? `Due ${localTime(d.due_at, opts.timeZone ?? 'UTC')}` : 'No due date';
  return {
    subject: `Reminder: ${d.title}`,
    text:
      `${d.title}\n${due}.${d.reason === 'snoozed' ? ' (snoozed reminder)' : ''}\n` +
      (link ? `\nOpen Taskflow: ${link}\n` : ''),
  };
}

/**
 * The receiver refused the message for good: an SMTP 5xx answer to the recipient or to the message (RFC 5321: a
 * permanent failure, "user unknown", "mailbox disabled"), a webhook's 410 Gone. Sent again it is refused again,
 * and a sender that keeps writing to a mailbox that does not exist loses its standing with mail providers: not
 * retried.
 */
export class RefusedError extends Error {
  override name = 'RefusedError';
}

/**
 * The receiver is there but asked to be tried later (429 or 503 with Retry-After): the next attempt is not
 * before `afterMs` (bounded by the retry policy's longest wait: a reminder is worth little days late).
 */
export class RetryLaterError extends Error {
  override name = 'RetryLaterError';
  constructor(
    message: string,
    readonly afterMs: number,
  ) {
    super(message);
  }
}

/** A failure for an answer of `status` that is not a success: RetryLaterError when it says when to come back. */
function unanswered(what: string, res: PostResult, now: Date): Error {
  const text = `${what} answered ${res.status}${res.text ? `: ${res.text}` : ''}`;
  const after = res.status === 429 || res.status === 503 ? retryAfterMs(res.retryAfter, now) : undefined;
  return after === undefined
    ? new Error(text)
    : new RetryLaterError(`${text} (Retry-After ${res.retryAfter})`, after);
}

export class EmailChannel {
  /** nodemailer is loaded only when email is configured (SMTP_URL). */
  static async open(smtpUrl: string, from: string, timeoutMs: number, link?: string): Promise<EmailChannel> {
    const { createTransport } = await import('nodemailer');
    const transport = createTransport({
      url: smtpUrl,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
    });
    return new EmailChannel(transport, from, timeoutMs, link);
  }

  /** The right-hand side of the Message-IDs: SMTP_FROM's domain, as nodemailer's own are. */
  private readonly idDomain: string;

  private constructor(
    private readonly transport: Transporter,
    private readonly from: string,
    /** The longest a mail's whole SMTP conversation takes, as a webhook's or a push's request. */
    private readonly timeoutMs: number,
    private readonly link?: string,
  ) {
    this.idDomain = /@([^@<>\s]+)>?\s*$/.exec(from)?.[1] ?? 'taskflow.invalid';
  }

  /**
   * Mails a reminder. Its Message-ID is the delivery's: a retry of a message the server kept without saying so
   * (the answer to it lost) is the same message, which mail systems and readers show once. A 5xx to the
   * recipient or the message is a RefusedError; the login and the sender (MAIL FROM), the deployment's to fix,
   * and 4xx answers fail as any error (retried).
   */
  async send(to: string, d: ReminderEventData, deliveryId: string, timeZone = 'UTC'): Promise<void> {
    const c = reminderContent(d, { timeZone, link: this.link });
    try {
      await this.sendWithin({
        from: this.from,
        to,
        subject: c.subject,
        text: c.text,
        messageId: `<${deliveryId}@${this.idDomain}>`,
        headers: { 'X-Taskflow-Reminder-Id': d.reminder_id, 'X-Taskflow-Delivery': deliveryId },
      });
    } catch (err) {
      const smtp = err as { permanent?: unknown; command?: unknown };
      if (smtp.permanent === true && (smtp.command === 'RCPT TO' || smtp.command === 'DATA'))
        throw new RefusedError(errorMessage(err), { cause: err });
      throw err;
    }
  }

  /**
   * sendMail bounded in total time, its connection closed at the bound: nodemailer's timeouts are each wait's,
   * which a server answering a line at a time renews for ever, past the delivery's claim (then claimed and
   * mailed again by another instance while this one still held the conversation).
   */
  private async sendWithin(mail: Parameters<Transporter['sendMail']>[0]): Promise<void> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      await this.transport.sendMail({ ...mail, signal });
    } catch (err) {
      if (signal.aborted)
        throw new Error(`mail server did not finish the message within ${this.timeoutMs} ms`, { cause: err });
      throw err;
    }
  }

  /**
   * The code that confirms `to` (EMAIL_CONFIRMATION). Nothing the user typed is in it but the address: a
   * message to an address someone else typed says only what it is for.
   */
  async sendConfirmation(to: string, code: string, validMinutes: number): Promise<void> {
    await this.sendWithin({
      from: this.from,
      to,
      subject: `Taskflow confirmation code: ${code}`,
      text:
        `${code} is your code to confirm this address for Taskflow reminders. It is valid for ${validMinutes} minutes.\n\n` +
        'If you did not ask for it, ignore this message: no reminder is sent to an address that was not confirmed.\n' +
        (this.link ? `\nTaskflow: ${this.link}\n` : ''),
      headers: { 'X-Taskflow-Confirmation': 'email' },
    });
  }

  close(): void {
    this.transport.close();
  }
}

export interface VapidKeys {
  publicKey: string;
  privateKey: string;
  subject: string;
}

export interface PushTarget {
  endpoint: string;
  p256dh: string;
  auth: string;
}

export class PushChannel {
  /**
   * web-push is loaded only when push is configured (VAPID keys). A subscription's endpoint is the user's to
   * give, so, as a webhook, it must be a public address (`allowPrivate`: development and tests); `agent`: a
   * custom TLS agent (tests trust a local push service through it).
   */
  static async open(
    vapid: VapidKeys,
    timeoutMs: number,
    opts: { agent?: Agent; link?: string; allowPrivate?: boolean } = {},
  ): Promise<PushChannel> {
    const { default: webpush } = await import('web-push');
    // Fails fast on malformed keys (at startup, not at the first reminder).
    webpush.setVapidDetails(vapid.subject, vapid.publicKey, vapid.privateKey);
    const allowPrivate = opts.allowPrivate ?? false;
    // The public-only lookup is post's, whatever the agent.
    return new PushChannel(webpush, vapid, timeoutMs, allowPrivate, opts.agent, opts.link);
  }

  private constructor(
    private readonly webpush: typeof WebPush,
    readonly vapid: VapidKeys,
    private readonly timeoutMs: number,
    private readonly allowPrivate: boolean,
    private readonly agent?: Agent,
    /** Where a click on the notification leads (PUBLIC_URL). */
    private readonly link?: string,
  ) {}

  /**
   * Sends to one subscription. Resolves 'gone' when the push service says the subscription no longer exists
   * (404/410): the caller deletes it.
   */
  async send(
    target: PushTarget,
    d: ReminderEventData,
    deliveryId: string,
    timeZone = 'UTC',
    /** When the attempt began: a Retry-After date counts from it, as a webhook's does. */
    now = new Date(),
  ): Promise<'sent' | 'gone'> {
    const c = reminderContent(d, { timeZone });
    const payload = fittedPush(c.subject, c.text.trim(), d.title, (title, body) => ({
      type: 'reminder',
      delivery_id: deliveryId,
      title,
      body,
      reminder_id: d.reminder_id,
      task_id: d.task_id,
      due_at: d.due_at,
      ...(this.link ? { url: this.link } : {}),
    }));
    // web-push encrypts and signs; the request is ours: bounded in total time (web-push's own timeout is the
    // socket's idle time, which a push service answering a byte at a time renews for ever, holding the
    // delivery loop of every user) and in what it keeps of the answer. A private address is refused.
    const request = this.webpush.generateRequestDetails(
      { endpoint: target.endpoint, keys: { p256dh: target.p256dh, auth: target.auth } },
      payload,
      { vapidDetails: this.vapid, TTL: 3600, urgency: 'high' },
    );
    const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
    let answer: { status: number; text: string };
    try {
      answer = await post(request.endpoint, request.body ?? Buffer.alloc(0), {
        headers,
        timeoutMs: this.timeoutMs,
        allowPrivate: this.allowPrivate,
        ...(this.agent ? { agent: this.agent } : {}),
      });
    } catch (err) {
      if (err instanceof BlockedAddressError) throw err;
      throw new Error(`push service answered no status: ${errorMessage(err)}`, { cause: err });
    }
    if (answer.status >= 200 && answer.status < 300) return 'sent';
    if (answer.status === 404 || answer.status === 410) return 'gone';
    // Too large for the push service: sent again it is refused again (retried, it went on for hours).
    if (answer.status === 413) throw new RefusedError(`push service answered 413: ${answer.text}`);
    throw unanswered('push service', answer, now);
  }
}

/**
 * The most plaintext a push carries: one aes128gcm record of 4096 bytes (RFC 8291 section 4; push services
 * refuse more with 413), less its header (86 bytes), tag (16) and padding delimiter (1).
 */
export const PUSH_MAX_PLAINTEXT = 3993;

/**
 * The push's JSON within PUSH_MAX_PLAINTEXT bytes: a title the task API accepts (500 code points, up to 2,000
 * bytes) is in both its title and its body, and went over. The body loses the title first (the due line stays),
 * then the title is cut, at whole code points.
 */
function fittedPush(
  title: string,
  body: string,
  taskTitle: string,
  payloadOf: (title: string, body: string) => object,
): string {
  let payload = JSON.stringify(payloadOf(title, body));
  if (Buffer.byteLength(payload) <= PUSH_MAX_PLAINTEXT) return payload;
  const shortBody = body.startsWith(`${taskTitle}\n`) ? body.slice(taskTitle.length + 1) : body;
  const length = codePoints(title);
  for (let keep = length; keep >= 0; keep = keep > 0 ? Math.floor(keep * 0.9) : -1) {
    payload = JSON.stringify(
      payloadOf(keep < length ? `${firstCodePoints(title, keep)}…` : title, shortBody),
    );
    if (Buffer.byteLength(payload) <= PUSH_MAX_PLAINTEXT) return payload;
  }
  return payload;
}

export class WebhookChannel {
  constructor(
    private readonly timeoutMs: number,
    /** Lets webhooks reach private and loopback addresses (development, tests); off in production. */
    private readonly allowPrivate = false,
  ) {}

  /**
   * POSTs the JSON body signed with the user's secret; any non-2xx answer is a failure (retried; a 429 or 503
   * with Retry-After is tried again no sooner, a 410 not at all). Receivers dedupe on X-Taskflow-Delivery (a
   * retry after a lost answer repeats it) and may reject old timestamps.
   */
  async send(
    url: string,
    secret: string,
    d: ReminderEventData,
    meta: { deliveryId: string; eventId: string; now: Date },
  ): Promise<void> {
    const timestamp = Math.floor(meta.now.getTime() / 1000);
    const body = JSON.stringify({
      id: meta.deliveryId,
      type: 'reminder.triggered',
      event_id: meta.eventId,
      timestamp,
      data: d,
    });
    const res = await post(url, body, {
      timeoutMs: this.timeoutMs,
      allowPrivate: this.allowPrivate,
      headers: {
        'content-type': 'application/json',
        'user-agent': 'Taskflow-Webhook/1',
        'x-taskflow-event': 'reminder.triggered',
        'x-taskflow-delivery': meta.deliveryId,
        'x-taskflow-timestamp': String(timestamp),
        'x-taskflow-signature': webhookSignature(secret, body),
      },
    });
    if (res.status >= 200 && res.status < 300) return;
    // 410 Gone: the receiver says the endpoint is no more (a 404 may be a deploy in progress: retried).
    if (res.status === 410) throw new RefusedError('webhook answered 410: the endpoint is gone for good');
    throw unanswered('webhook', { ...res, text: '' }, meta.now);
  }
}
