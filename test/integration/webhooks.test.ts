/**
 * Webhook requests to a real HTTP receiver: signed, and refused when the URL's host is not a public address
 * (server-side request forgery), whether it is written as an IP or resolves to one through DNS. A web-push
 * subscription's endpoint is the user's to give too: refused the same way, before anything is sent.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { webhookSignature } from '../../src/domain/notifications.ts';
import webpush from 'web-push';
import { PushChannel, WebhookChannel } from '../../src/services/notifications/channels.ts';
import { BlockedAddressError, isNonPublicAddress } from '../../src/services/notifications/outbound.ts';
import { startPushService, startWebhookSink } from '../helpers/sinks.ts';

const reminder: ReminderEventData = {
  reminder_id: '00000000-0000-4000-8000-000000000001',
  task_id: '00000000-0000-4000-8000-000000000002',
  user_id: 'wh-user',
  title: 'Pay rent',
  remind_at: '2026-03-01T09:00:00.000Z',
  due_at: '2026-03-01T10:00:00.000Z',
  reason: 'scheduled',
  channels: ['webhook'],
};
const meta = { deliveryId: 'd-1', eventId: 'e-1', now: new Date('2026-03-01T09:00:00Z') };

describe('isNonPublicAddress', () => {
  it('covers loopback, private, link-local (metadata), CGNAT, multicast, unique-local and mapped addresses', () => {
    for (const a of [
      '127.0.0.1',
      '10.1.2.3',
      '172.20.0.1',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fd00::1',
      'fe80::1',
      '::ffff:10.0.0.1',
      '::ffff:127.0.0.1',
      // IPv4-compatible, site-local, local-use NAT64 and 6to4 forms that reach inside too
      '::127.0.0.1',
      '::7f00:1',
      'fec0::1',
      '64:ff9b:1::a00:1',
      '2002:7f00:1::1',
      // IPv4-translated, discard-only, Teredo and documentation ranges
      '::ffff:0:a00:1',
      '::ffff:0:7f00:1',
      '::ffff:0:10.0.0.1',
      '100::1',
      '2001:0:4136:e378:8000:63bf:3fff:fdd2',
      '2001:db8::1',
    ])
      assert.equal(isNonPublicAddress(a), true, a);
    for (const a of ['93.184.216.34', '8.8.8.8', '172.32.0.1', '2606:4700::1111', '::ffff:8.8.8.8'])
      assert.equal(isNonPublicAddress(a), false, a);
  });
});

describe('webhook channel', () => {
  let sink: Awaited<ReturnType<typeof startWebhookSink>>;
  before(async () => {
    sink = await startWebhookSink((path) => (path === '/fail' ? 500 : 200));
  });
  after(() => sink.close());
  const port = () => new URL(sink.url).port;

  it('refuses loopback targets by default, as an IP and through DNS, without sending anything', async () => {
    const channel = new WebhookChannel(2_000);
    for (const url of [
      `http://127.0.0.1:${port()}/a`,
      `http://localhost:${port()}/b`,
      `http://[::1]:${port()}/c`,
    ])
      await assert.rejects(channel.send(url, 'secret-secret-secret', reminder, meta), (err: unknown) => {
        assert.ok(err instanceof BlockedAddressError, String(err));
        assert.match(err.message, /not a public address .*NOTIFY_WEBHOOK_ALLOW_PRIVATE/);
        return true;
      });
    assert.equal(sink.calls.length, 0);
  });

  it('sends a signed POST when private targets are allowed, and fails on a non-2xx answer', async () => {
    const channel = new WebhookChannel(2_000, true);
    await channel.send(`http://localhost:${port()}/ok`, 'secret-secret-secret', reminder, meta);
    const [call] = sink.calls.filter((c) => c.path === '/ok');
    assert.ok(call);
    assert.equal(call.headers['x-taskflow-signature'], webhookSignature('secret-secret-secret', call.body));
    assert.equal(JSON.parse(call.body).data.title, 'Pay rent');
    await assert.rejects(
      channel.send(`http://127.0.0.1:${port()}/fail`, 'secret-secret-secret', reminder, meta),
      /webhook answered 500/,
    );
  });
});

describe('web-push endpoints', () => {
  let service: Awaited<ReturnType<typeof startPushService>>;
  before(async () => {
    service = await startPushService();
  });
  after(() => service.close());
  const vapid = { ...webpush.generateVAPIDKeys(), subject: 'mailto:ops@taskflow.test' };
  const pushReminder = { ...reminder, channels: ['push' as const] };

  it('refuses an endpoint on a loopback address, written as one or through DNS, without connecting', async () => {
    const client = service.subscribe('victim');
    const target = { endpoint: client.endpoint, p256dh: client.keys.p256dh, auth: client.keys.auth };
    // As an IP (the test's agent trusts the service's certificate, so only the address check stands between).
    const trusting = await PushChannel.open(vapid, 2_000, { agent: service.agent });
    await assert.rejects(trusting.send(target, pushReminder, 'd-1'), BlockedAddressError);
    // Through DNS: localhost resolves to a loopback address, which the default agent's lookup refuses.
    const byName = await PushChannel.open(vapid, 2_000);
    const named = { ...target, endpoint: client.endpoint.replace('127.0.0.1', 'localhost') };
    await assert.rejects(byName.send(named, pushReminder, 'd-2'), (err: unknown) => {
      assert.ok(err instanceof BlockedAddressError, String(err));
      assert.match(err.message, /localhost resolves to .*not a public address/);
      return true;
    });
    assert.equal(service.calls.length, 0, 'nothing reached the address');
    // Allowed (development, tests), it is delivered.
    const allowed = await PushChannel.open(vapid, 2_000, { agent: service.agent, allowPrivate: true });
    assert.equal(await allowed.send(target, pushReminder, 'd-3'), 'sent');
    assert.equal(service.calls.length, 1);
  });
});
