/**
 * Webhook requests to a real HTTP receiver: signed, and refused when the URL's host is not a public address
 * (server-side request forgery), whether it is written as an IP or resolves to one through DNS.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { webhookSignature } from '../../src/domain/notifications.ts';
import { WebhookChannel } from '../../src/services/notifications/channels.ts';
import { BlockedAddressError, isNonPublicAddress } from '../../src/services/notifications/outbound.ts';
import { startWebhookSink } from '../helpers/sinks.ts';

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
