/**
 * A push is one aes128gcm record of at most 4096 bytes (RFC 8291 section 4), which push services enforce with
 * 413. A task title the API accepts (500 code points; 2,000 bytes of emoji) is in the push's title and body:
 * the push was about 4.4 KB, refused, retried for hours as any failure and then dead. The test push service
 * answers 413 over 4096 bytes, as real ones do.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import webpush from 'web-push';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { validateCreate } from '../../src/domain/task.ts';
import { PushChannel, RefusedError } from '../../src/services/notifications/channels.ts';
import { startPushService } from '../helpers/sinks.ts';

const title = '😀'.repeat(500);
const reminder: ReminderEventData = {
  reminder_id: '00000000-0000-4000-8000-000000000001',
  task_id: '00000000-0000-4000-8000-000000000002',
  user_id: 'push-user',
  title,
  remind_at: '2026-03-01T09:00:00.000Z',
  due_at: '2026-03-01T10:00:00.000Z',
  reason: 'scheduled',
  channels: ['push'],
};

describe('a push of a reminder of a task with the longest title', () => {
  let service: Awaited<ReturnType<typeof startPushService>>;
  before(async () => {
    service = await startPushService();
  });
  after(() => service.close());
  const vapid = { ...webpush.generateVAPIDKeys(), subject: 'mailto:ops@taskflow.test' };
  const channelOf = () =>
    PushChannel.open(vapid, 5_000, {
      agent: service.agent,
      allowPrivate: true,
      link: 'https://taskflow.example.com/',
    });

  it("fits in the 4096 bytes of one record: the body drops the title, which the push's title has whole", async () => {
    assert.ok(validateCreate({ title }, { now: new Date('2026-03-01T08:00:00Z') } as never).ok);
    const client = service.subscribe('long-title');
    const target = { endpoint: client.endpoint, p256dh: client.keys.p256dh, auth: client.keys.auth };
    const channel = await channelOf();
    assert.equal(await channel.send(target, reminder, '01939a3e-0000-7000-8000-000000000000'), 'sent');
    const raw = service.calls.at(-1)!.raw;
    assert.ok(raw.length <= 4096, `${raw.length} bytes`);
    const shown = JSON.parse(client.decrypt(raw));
    assert.equal(shown.body, 'Due 2026-03-01 10:00 UTC.');
    assert.equal(shown.title, `Reminder: ${title}`);
    assert.equal(shown.task_id, reminder.task_id);
    // A short title is sent whole, in both.
    assert.equal(await channel.send(target, { ...reminder, title: 'Pay rent' }, 'd-short'), 'sent');
    const short = JSON.parse(client.decrypt(service.calls.at(-1)!.raw));
    assert.deepEqual(
      [short.title, short.body],
      ['Reminder: Pay rent', 'Pay rent\nDue 2026-03-01 10:00 UTC.'],
    );
  });

  it('takes a 413 for a refusal (not retried): sent again it is refused again', async () => {
    const client = service.subscribe('too-large', 413);
    const target = { endpoint: client.endpoint, p256dh: client.keys.p256dh, auth: client.keys.auth };
    await assert.rejects((await channelOf()).send(target, { ...reminder, title: 'x' }, 'd-2'), RefusedError);
  });
});
