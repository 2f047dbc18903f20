/**
 * The notifications HTTP API (served by the `notifications` target on the process's HTTP server):
 *   GET/PUT /api/notifications/preferences
 *   POST    /api/notifications/email/confirmation-code   (mails a code to the address)
 *   POST    /api/notifications/email/confirm             ({ code }: reminders are mailed from then on)
 *   GET     /api/notifications/vapid-public-key
 *   POST    /api/notifications/push-subscriptions        (the browser's PushSubscription JSON)
 *   DELETE  /api/notifications/push-subscriptions/:id
 *   GET     /api/notifications?unread=true&limit=50     (the in-app inbox)
 *   POST    /api/notifications/:id/read
 * The user comes from the bearer token; another user's notification is a 404.
 */
import { createdWith, noContent, okWith, problemDoc } from '../../http/openapi.ts';
import { instant, nullableInstant } from '../../contracts/schemas.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope } from '../../http/authenticated.ts';
import type { Clock } from '../../domain/clock.ts';
import {
  ConflictError,
  DependencyFailedError,
  NotFoundError,
  RateLimitedError,
  ValidationError,
  type FieldIssue,
} from '../../domain/errors.ts';
import { bodyJsonSchema, fieldJsonSchema, unknownParameters } from '../../domain/fields.ts';
import {
  type Channel,
  CHANNELS,
  CONFIRM_EMAIL_FIELDS,
  EMAIL_CONFIRMATION,
  validateEmailCode,
  PREFERENCE_FIELDS,
  PUSH_SUBSCRIPTION_FIELDS,
  validatePreferencesPatch,
  validatePushSubscription,
} from '../../domain/notifications.ts';
import type { Db } from '../../store/db.ts';
import { isUuid } from '../../domain/text.ts';
import { inAppNotificationSchema } from '../../contracts/schemas.ts';
import {
  addPushSubscription,
  confirmEmailCode,
  releaseEmailCode,
  reserveEmailCode,
  storeEmailCode,
  deletePushSubscription,
  getPreferences,
  listNotifications,
  markRead,
  notificationView,
  preferencesView,
  pushSubscriptionView,
  putPreferences,
  listDeliveries,
  retryDeadDelivery,
  DELIVERY_STATUSES,
  type DeliveryStatus,
} from './store.ts';
import { nonPublicTarget } from './outbound.ts';
import type { EmailChannel } from './channels.ts';
import { errorMessage } from '../../error-text.ts';

export interface NotificationRoutesDeps {
  db: Db;
  clock: Clock;
  verify: Verifier;
  vapidPublicKey: string | null;
  /** The mail channel (SMTP_URL), which also mails the codes that confirm an address; null: email is off. */
  email: EmailChannel | null;
  /** NOTIFY_WEBHOOK_ALLOW_PRIVATE: webhooks and push endpoints may name private addresses (development). */
  allowPrivateTargets: boolean;
}

const security = [{ bearerAuth: [] }];

/** A list's `limit` query parameter (1-200, 50 when left out); a bad one is added to `issues`. */
function pageLimit(raw: string | undefined, issues: FieldIssue[]): number {
  const n = raw === undefined ? 50 : Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 200)
    issues.push({ path: 'limit', message: 'must be an integer from 1 to 200' });
  return n;
}

/** A delivery as the deliveries routes answer it (store.ts DeliveryView). */
const deliveryDoc = {
  type: 'object',
  additionalProperties: false,
  required: [
    'id',
    'channel',
    'status',
    'reminder_id',
    'task_id',
    'title',
    'attempts',
    'last_error',
    'next_attempt_at',
    'sent_at',
    'created_at',
  ],
  properties: {
    id: { type: 'string', format: 'uuid' },
    channel: { type: 'string', enum: [...CHANNELS] },
    status: {
      type: 'string',
      enum: [...DELIVERY_STATUSES],
      description:
        'pending (to be sent, or retried at next_attempt_at), sent, dead (gave up: last_error says why), skipped',
    },
    reminder_id: { type: 'string' },
    task_id: { type: 'string', format: 'uuid' },
    title: { type: 'string', description: "the task's title when the reminder fired" },
    attempts: { type: 'integer', minimum: 0 },
    last_error: { type: ['string', 'null'] },
    next_attempt_at: { ...nullableInstant, description: 'when a pending delivery is tried next' },
    sent_at: nullableInstant,
    created_at: instant,
  },
} as const;

const quietHoursDoc = fieldJsonSchema(PREFERENCE_FIELDS.quiet_hours) as {
  required: readonly string[];
  properties: Record<string, unknown>;
};
/**
 * The preferences as the routes answer them (store.ts preferencesView): the fields of the PUT body, each always
 * present (every channel, and quiet hours' time zone), and whether a webhook secret is set.
 */
const preferencesDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['email', 'email_confirmed', 'channels', 'quiet_hours', 'webhook_url', 'webhook_secret_set'],
  properties: {
    email: fieldJsonSchema(PREFERENCE_FIELDS.email),
    email_confirmed: {
      type: 'boolean',
      description:
        'whether the code mailed to the address was typed back (POST /api/notifications/email/confirm): reminders are mailed only to a confirmed address',
    },
    channels: { ...fieldJsonSchema(PREFERENCE_FIELDS.channels), required: CHANNELS },
    quiet_hours: {
      ...quietHoursDoc,
      required: [...quietHoursDoc.required, 'timezone'],
      // Any zone the runtime takes, links such as Asia/Calcutta too (the document's list names only canonical ones).
      properties: {
        ...quietHoursDoc.properties,
        timezone: {
          type: ['string', 'null'],
          description:
            "an IANA time zone; null: the user's own (GET /api/me/settings), UTC when that is unset",
        },
      },
    },
    webhook_url: fieldJsonSchema(PREFERENCE_FIELDS.webhook_url),
    webhook_secret_set: {
      type: 'boolean',
      description: 'whether a webhook secret is stored (it signs webhook deliveries; never shown again)',
    },
  },
} as const;
/** A code mailed to the address: where, and until when it can be typed back. */
const codeSentDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['sent_to', 'expires_at'],
  properties: { sent_to: { type: 'string' }, expires_at: instant },
} as const;

const doc = (summary: string, extra: object = {}) => ({
  schema: { tags: ['notifications'], summary, security, ...extra },
});

export async function registerNotificationRoutes(
  app: FastifyInstance,
  deps: NotificationRoutesDeps,
): Promise<void> {
  const { db, clock } = deps;
  /** A URL that could never be delivered to is a 400 when it is saved (outbound.ts nonPublicTarget). */
  const refuseNonPublic = async (url: string | null | undefined, path: string) => {
    if (!url || deps.allowPrivateTargets) return;
    const problem = await nonPublicTarget(new URL(url));
    if (problem)
      throw new ValidationError([
        {
          path,
          message: `${problem}: it must reach the public internet (NOTIFY_WEBHOOK_ALLOW_PRIVATE=true allows it)`,
        },
      ]);
  };

  /**
   * Mails a new confirmation code to the user's unconfirmed address. The send is counted before the mail goes
   * (the limits hold across requests at once), and the code replaces the one before only once the mail
   * server took it; a refused mail is not counted and leaves the code before valid.
   */
  const mailCode = async (userId: string) => {
    const email = deps.email;
    if (!email) throw new ConflictError('email is not configured on this server (SMTP_URL)');
    const now = clock.now();
    const code = await db.transaction((tx) => reserveEmailCode(tx, userId, now));
    if (!code.ok) {
      if (code.reason === 'user limit' || code.reason === 'address limit')
        throw new RateLimitedError(
          `${EMAIL_CONFIRMATION.perDay} codes were mailed ${code.reason === 'user limit' ? 'for you' : 'to this address'} in the last 24 hours; ask again after ${code.retryAt.toISOString()}`,
          Math.max(1, Math.ceil((code.retryAt.getTime() - now.getTime()) / 1000)),
        );
      throw new ConflictError(
        code.reason === 'confirmed'
          ? 'the address is confirmed already'
          : 'no email address is set: PUT /api/notifications/preferences with one first',
      );
    }
    try {
      await email.sendConfirmation(code.email, code.code, EMAIL_CONFIRMATION.ttlMs / 60_000);
    } catch (err) {
      app.log.warn({ err: errorMessage(err) }, 'the confirmation code was not mailed');
      await releaseEmailCode(db, code.sendId).catch(() => undefined);
      throw new DependencyFailedError('the mail server did not take the message; try again later', 60);
    }
    await db.transaction((tx) => storeEmailCode(tx, userId, code));
    return { sent_to: code.email, expires_at: code.expiresAt.toISOString() };
  };

  await authenticatedScope(app, deps, async (scope, userOf) => {
    scope.get(
      '/api/notifications/preferences',
      doc('Your notification preferences', { response: okWith('Your preferences', preferencesDoc) }),
      async (req) => preferencesView(await getPreferences(db, await userOf(req))),
    );

    scope.put(
      '/api/notifications/preferences',
      doc(
        'Set notification preferences (fields left out keep their value): email, channels, quiet_hours, webhook_url, webhook_secret',
        {
          body: bodyJsonSchema(PREFERENCE_FIELDS),
          response: okWith('The preferences now (a generated webhook_secret is shown once)', {
            ...preferencesDoc,
            properties: {
              ...preferencesDoc.properties,
              webhook_secret: {
                type: 'string',
                description:
                  'generated for a webhook_url set without a secret: verifies X-Taskflow-Signature; shown in this answer only',
              },
              email_confirmation: {
                description:
                  'when the email address changed: the code mailed to it, or why none was (ask again with POST /api/notifications/email/confirmation-code)',
                oneOf: [
                  codeSentDoc,
                  {
                    type: 'object',
                    additionalProperties: false,
                    required: ['not_sent'],
                    properties: { not_sent: { type: 'string' } },
                  },
                ],
              },
            },
          }),
        },
      ),
      async (req) => {
        const userId = await userOf(req);
        const parsed = validatePreferencesPatch(req.body);
        if (!parsed.ok) throw new ValidationError(parsed.issues);
        await refuseNonPublic(parsed.value.webhook_url, 'webhook_url');
        const { prefs, generatedSecret, emailChanged } = await db.transaction((tx) =>
          putPreferences(tx, userId, parsed.value, clock.now()),
        );
        const confirmation =
          emailChanged && prefs.email
            ? await mailCode(userId).catch((err: unknown) => {
                // The preferences are saved: why no code went is part of the answer, not an error.
                if (
                  err instanceof ConflictError ||
                  err instanceof RateLimitedError ||
                  err instanceof DependencyFailedError
                )
                  return { not_sent: err.message };
                throw err;
              })
            : undefined;
        return {
          ...preferencesView(prefs),
          ...(generatedSecret ? { webhook_secret: generatedSecret } : {}),
          ...(confirmation ? { email_confirmation: confirmation } : {}),
        };
      },
    );

    scope.post(
      '/api/notifications/email/confirmation-code',
      doc(
        `Mail a new code to your email address (the one before it is void); reminders are mailed only to an address confirmed with it. At most ${EMAIL_CONFIRMATION.perDay} in 24 hours`,
        {
          response: {
            ...okWith(
              `The code was mailed; it is valid for ${EMAIL_CONFIRMATION.ttlMs / 60_000} minutes`,
              codeSentDoc,
            ),
            409: problemDoc,
          },
        },
      ),
      async (req) => mailCode(await userOf(req)),
    );

    scope.post(
      '/api/notifications/email/confirm',
      doc('Confirm your email address with the code mailed to it', {
        body: bodyJsonSchema(CONFIRM_EMAIL_FIELDS, { required: ['code'] }),
        response: { ...okWith('Your preferences, the address confirmed', preferencesDoc), 409: problemDoc },
      }),
      async (req) => {
        const userId = await userOf(req);
        const parsed = validateEmailCode(req.body);
        if (!parsed.ok) throw new ValidationError(parsed.issues);
        const r = await db.transaction((tx) => confirmEmailCode(tx, userId, parsed.value.code, clock.now()));
        switch (r.outcome) {
          case 'confirmed':
          case 'already confirmed':
            return preferencesView(await getPreferences(db, userId));
          case 'wrong':
            throw new ValidationError([
              {
                path: 'code',
                message:
                  r.attemptsLeft > 0
                    ? `is not the code mailed to the address (${r.attemptsLeft} more tries with this code)`
                    : 'is not the code mailed to the address, and that code is now void: ask for a new one',
              },
            ]);
          case 'expired':
            throw new ValidationError([
              {
                path: 'code',
                message: 'has expired: ask for a new one (POST /api/notifications/email/confirmation-code)',
              },
            ]);
          case 'no code':
            throw new ConflictError(
              'no code is waiting for the address: ask for one (POST /api/notifications/email/confirmation-code)',
            );
          case 'no address':
            throw new ConflictError(
              'no email address is set: PUT /api/notifications/preferences with one first',
            );
        }
      },
    );

    scope.get(
      '/api/notifications/vapid-public-key',
      doc('The VAPID public key for PushManager.subscribe', {
        // 404: web push is not configured
        response: {
          ...okWith('The key', {
            type: 'object',
            required: ['public_key'],
            properties: { public_key: { type: 'string', description: 'applicationServerKey, base64url' } },
          }),
          404: problemDoc,
        },
      }),
      async (req) => {
        await userOf(req);
        if (!deps.vapidPublicKey) throw new NotFoundError('web push configuration');
        return { public_key: deps.vapidPublicKey };
      },
    );

    scope.post(
      '/api/notifications/push-subscriptions',
      doc('Register a browser push subscription (PushSubscription.toJSON())', {
        body: {
          type: 'object',
          required: ['endpoint', 'keys'],
          properties: {
            endpoint: fieldJsonSchema(PUSH_SUBSCRIPTION_FIELDS.endpoint),
            keys: fieldJsonSchema(PUSH_SUBSCRIPTION_FIELDS.keys),
          },
        },
        response: createdWith('The subscription (the same one again for an endpoint registered before)', {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'endpoint', 'created_at'],
          properties: {
            id: { type: 'string', format: 'uuid', description: 'to remove it' },
            endpoint: fieldJsonSchema(PUSH_SUBSCRIPTION_FIELDS.endpoint),
            created_at: instant,
          },
        }),
      }),
      async (req, reply: FastifyReply) => {
        const userId = await userOf(req);
        const parsed = validatePushSubscription(req.body);
        if (!parsed.ok) throw new ValidationError(parsed.issues);
        await refuseNonPublic(parsed.value.endpoint, 'endpoint');
        const row = await addPushSubscription(db, userId, parsed.value);
        return reply.code(201).send(pushSubscriptionView(row));
      },
    );

    scope.delete(
      '/api/notifications/push-subscriptions/:id',
      doc('Remove a push subscription', { response: noContent('Removed') }),
      async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
        const userId = await userOf(req);
        if (!isUuid(req.params.id) || !(await deletePushSubscription(db, userId, req.params.id)))
          throw new NotFoundError('push subscription');
        return reply.code(204).send();
      },
    );

    scope.get(
      '/api/notifications',
      doc('Your in-app notifications, newest first', {
        querystring: {
          type: 'object',
          properties: {
            unread: { type: 'boolean' },
            limit: { type: 'integer', minimum: 1, maximum: 200, default: 50 },
          },
        },
        response: okWith('A page of notifications and the unread count', {
          type: 'object',
          required: ['items', 'unread_count'],
          properties: {
            items: { type: 'array', items: inAppNotificationSchema },
            unread_count: { type: 'integer' },
          },
        }),
      }),
      async (req: FastifyRequest<{ Querystring: Record<string, string | undefined> }>) => {
        const userId = await userOf(req);
        const { unread, limit } = req.query;
        const issues = unknownParameters(req.query, ['unread', 'limit']);
        if (unread !== undefined && unread !== 'true' && unread !== 'false')
          issues.push({ path: 'unread', message: 'must be true or false' });
        const n = pageLimit(limit, issues);
        if (issues.length) throw new ValidationError(issues);
        const r = await listNotifications(db, userId, { unreadOnly: unread === 'true', limit: n });
        return { items: r.items.map(notificationView), unread_count: r.unread_count };
      },
    );

    scope.get(
      '/api/notifications/deliveries',
      doc(
        'Your notification deliveries, newest first: each reminder on each channel, and how it went (a dead one says why)',
        {
          querystring: {
            type: 'object',
            properties: {
              status: { type: 'string', enum: [...DELIVERY_STATUSES] },
              channel: { type: 'string', enum: [...CHANNELS] },
              limit: { type: 'integer', minimum: 1, maximum: 200, default: 50 },
            },
          },
          response: okWith('A page of deliveries', {
            type: 'object',
            required: ['items'],
            properties: { items: { type: 'array', items: deliveryDoc } },
          }),
        },
      ),
      async (req: FastifyRequest<{ Querystring: Record<string, string | undefined> }>) => {
        const userId = await userOf(req);
        const { status, channel, limit } = req.query;
        const issues = unknownParameters(req.query, ['status', 'channel', 'limit']);
        if (status !== undefined && !(DELIVERY_STATUSES as readonly string[]).includes(status))
          issues.push({ path: 'status', message: `must be one of ${DELIVERY_STATUSES.join(', ')}` });
        if (channel !== undefined && !(CHANNELS as readonly string[]).includes(channel))
          issues.push({ path: 'channel', message: `must be one of ${CHANNELS.join(', ')}` });
        const n = pageLimit(limit, issues);
        if (issues.length) throw new ValidationError(issues);
        const items = await listDeliveries(db, userId, {
          status: status as DeliveryStatus | undefined,
          channel: channel as Channel | undefined,
          limit: n,
        });
        return { items };
      },
    );

    scope.post(
      '/api/notifications/deliveries/:id/retry',
      doc(
        'Send a dead delivery again (its attempts start over; a push goes only to the devices not reached)',
        {
          response: { ...okWith('The delivery, pending', deliveryDoc), 409: problemDoc },
        },
      ),
      async (req: FastifyRequest<{ Params: { id: string } }>) => {
        const userId = await userOf(req);
        const r = isUuid(req.params.id)
          ? await retryDeadDelivery(db, userId, req.params.id, clock.now())
          : undefined;
        if (!r) throw new NotFoundError('delivery');
        if (r === 'not dead')
          throw new ConflictError('only a dead delivery can be retried; this one is not dead');
        return r;
      },
    );

    scope.post(
      '/api/notifications/:id/read',
      doc('Mark an in-app notification read', {
        response: okWith('The notification', inAppNotificationSchema),
      }),
      async (req: FastifyRequest<{ Params: { id: string } }>) => {
        const userId = await userOf(req);
        const row = isUuid(req.params.id)
          ? await markRead(db, userId, req.params.id, clock.now())
          : undefined;
        if (!row) throw new NotFoundError('notification');
        return notificationView(row);
      },
    );
  });
}
