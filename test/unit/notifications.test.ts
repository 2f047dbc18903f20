/** Notification rules (pure): preferences validation, quiet hours, webhook signatures, retry delays. */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { recipientKey } from '../../src/services/notifications/store.ts';
import {
  quietHoursEnd,
  retryAfterMs,
  retryDelayMs,
  validatePreferencesPatch,
  validatePushSubscription,
  verifyWebhookSignature,
  webhookSignature,
} from '../../src/domain/notifications.ts';

describe('quietHoursEnd', () => {
  const overnight = { start: '22:00', end: '07:00', timezone: 'Europe/Berlin' };
  it('is null outside the window', () => {
    assert.equal(quietHoursEnd(new Date('2026-01-15T12:00:00Z'), overnight), null); // 13:00 Berlin
    assert.equal(quietHoursEnd(new Date('2026-01-15T06:00:00Z'), overnight), null); // 07:00 Berlin: ended
  });
  it('ends at the next local end time for a window across midnight', () => {
    // 23:30 Berlin (UTC+1 in January) -> 07:00 Berlin next day = 06:00Z
    assert.equal(
      quietHoursEnd(new Date('2026-01-15T22:30:00Z'), overnight)?.toISOString(),
      '2026-01-16T06:00:00.000Z',
    );
    // 02:00 Berlin -> 07:00 Berlin the same day
    assert.equal(
      quietHoursEnd(new Date('2026-01-16T01:00:00Z'), overnight)?.toISOString(),
      '2026-01-16T06:00:00.000Z',
    );
    // 22:00 exactly is inside
    assert.equal(
      quietHoursEnd(new Date('2026-01-15T21:00:00Z'), overnight)?.toISOString(),
      '2026-01-16T06:00:00.000Z',
    );
  });
  it('ends in the repeated hour of a fall-back day, not a day later', () => {
    const cases: [now: string, end: string, timezone: string, expected: string][] = [
      // 01:10 EST, the second pass of 01:00-02:00 on 7 November 2027: ends at 01:30 EST (06:30Z) that night.
      ['2027-11-07T06:10:00Z', '01:30', 'America/New_York', '2027-11-07T06:30:00.000Z'],
      // 02:10 CET, the second pass of 02:00-03:00 on 31 October 2027: ends at 02:30 CET (01:30Z).
      ['2027-10-31T01:10:00Z', '02:30', 'Europe/Berlin', '2027-10-31T01:30:00.000Z'],
      // Its first pass ends at the first 02:30 (CEST, 00:30Z).
      ['2027-10-31T00:10:00Z', '02:30', 'Europe/Berlin', '2027-10-31T00:30:00.000Z'],
    ];
    for (const [now, end, timezone, expected] of cases)
      assert.equal(
        quietHoursEnd(new Date(now), { start: '22:00', end, timezone })?.toISOString(),
        expected,
        `${now} in ${timezone}`,
      );
  });

  it('handles a same-day window and the zone offset in summer', () => {
    const lunch = { start: '12:00', end: '13:30', timezone: 'America/New_York' };
    // Without a zone of its own, the window is read in the user's.
    assert.equal(
      quietHoursEnd(
        new Date('2026-07-01T16:15:00Z'),
        { ...lunch, timezone: null },
        'America/New_York',
      )?.toISOString(),
      '2026-07-01T17:30:00.000Z',
    );
    assert.equal(
      quietHoursEnd(new Date('2026-07-01T16:15:00Z'), { ...lunch, timezone: null }),
      null,
      'UTC: 16:15',
    );
    // 12:15 EDT (UTC-4) in July
    assert.equal(
      quietHoursEnd(new Date('2026-07-01T16:15:00Z'), lunch)?.toISOString(),
      '2026-07-01T17:30:00.000Z',
    );
    assert.equal(quietHoursEnd(new Date('2026-07-01T17:30:00Z'), lunch), null);
  });
  it('ends correctly across a DST change (the night Europe moves to summer time)', () => {
    // 2026-03-29 02:00 -> 03:00 in Berlin. At 01:30 CET (00:30Z), the 07:00 CEST end is 05:00Z.
    assert.equal(
      quietHoursEnd(new Date('2026-03-29T00:30:00Z'), overnight)?.toISOString(),
      '2026-03-29T05:00:00.000Z',
    );
  });
});

describe('validatePreferencesPatch', () => {
  it('accepts a full valid body', () => {
    const r = validatePreferencesPatch({
      email: 'a@example.com',
      channels: { push: false },
      quiet_hours: { start: '22:00', end: '07:00', timezone: 'Europe/Berlin' },
      webhook_url: 'https://hooks.example.com/x',
      webhook_secret: '0123456789abcdef',
    });
    assert.ok(r.ok);
    assert.deepEqual(r.value, {
      email: 'a@example.com',
      channels: { push: false },
      quiet_hours: { start: '22:00', end: '07:00', timezone: 'Europe/Berlin' },
      webhook_url: 'https://hooks.example.com/x',
      webhook_secret: '0123456789abcdef',
    });
  });
  it("accepts nulls to clear; quiet hours without a zone follow the user's own (null)", () => {
    const r = validatePreferencesPatch({
      email: null,
      webhook_url: null,
      quiet_hours: { start: '01:00', end: '02:00' },
    });
    assert.ok(r.ok);
    assert.deepEqual(r.value.quiet_hours, { start: '01:00', end: '02:00', timezone: null });
  });
  it('stores the quiet-hours zone as IANA spells it', () => {
    const r = validatePreferencesPatch({
      quiet_hours: { start: '22:00', end: '07:00', timezone: 'europe/berlin' },
    });
    assert.ok(r.ok);
    assert.equal(r.value.quiet_hours?.timezone, 'Europe/Berlin');
  });
  it('reports each invalid field', () => {
    const r = validatePreferencesPatch({
      email: 'not-an-address',
      channels: { sms: true, email: 'yes' },
      quiet_hours: { start: '25:00', end: '7:00', timezone: 'Mars/Base' },
      webhook_url: 'ftp://x',
      webhook_secret: 'short',
      other: 1,
    });
    assert.ok(!r.ok);
    assert.deepEqual(r.issues.map((i) => i.path).sort(), [
      'channels.email',
      'channels.sms',
      'email',
      'other',
      'quiet_hours.end',
      'quiet_hours.start',
      'quiet_hours.timezone',
      'webhook_secret',
      'webhook_url',
    ]);
    // The address as the document's pattern states it: no white space around it either.
    const spaced = validatePreferencesPatch({ email: ' a@example.com ' });
    assert.ok(!spaced.ok && spaced.issues[0]!.path === 'email');
    // start = end is an empty window: no quiet hours (quietHoursEnd answers null), not an error.
    assert.ok(validatePreferencesPatch({ quiet_hours: { start: '07:00', end: '07:00' } }).ok);
  });
});

describe('webhook signatures', () => {
  it('is keyed with the whole webhook_secret, its whsec_ prefix included (as the README tells receivers)', () => {
    const secret = 'whsec_Zm9vYmFyYmF6cXV4cXV1eGNvcmdl';
    const body = '{"id":"d-1","type":"reminder.triggered"}';
    const expected = createHmac('sha256', secret).update(body).digest('hex');
    assert.equal(webhookSignature(secret, body), `sha256=${expected}`);
  });

  it('is sha256=<hex HMAC-SHA256 of the raw body>', () => {
    const body = '{"a":1}';
    const expected = createHmac('sha256', 'topsecret-topsecret').update(body).digest('hex');
    assert.equal(webhookSignature('topsecret-topsecret', body), `sha256=${expected}`);
    assert.equal(verifyWebhookSignature('topsecret-topsecret', body, `sha256=${expected}`), true);
    assert.equal(verifyWebhookSignature('topsecret-topsecret', body + ' ', `sha256=${expected}`), false);
    assert.equal(verifyWebhookSignature('other-secret-value', body, `sha256=${expected}`), false);
    assert.equal(verifyWebhookSignature('topsecret-topsecret', body, 'sha256=00'), false);
  });
});

describe('retryDelayMs', () => {
  it('doubles per attempt within [step/2, step], capped', () => {
    const policy = { baseMs: 1000, maxMs: 10_000 };
    assert.equal(
      retryDelayMs(1, policy, () => 0),
      500,
    );
    assert.equal(
      retryDelayMs(1, policy, () => 1),
      1000,
    );
    assert.equal(
      retryDelayMs(3, policy, () => 1),
      4000,
    );
    assert.equal(
      retryDelayMs(10, policy, () => 1),
      10_000,
    );
    assert.equal(
      retryDelayMs(10, policy, () => 0),
      5000,
    );
  });
});

describe('validatePushSubscription', () => {
  it('accepts the browser shape and rejects others', () => {
    const ok = validatePushSubscription({
      endpoint: 'https://push.example.com/abc',
      expirationTime: null,
      keys: {
        p256dh: 'BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM',
        auth: 'tBHItJI5svbpez7KI4CCXg',
      },
    });
    assert.ok(ok.ok);
    const bad = validatePushSubscription({
      endpoint: 'http://push.example.com',
      keys: { p256dh: '!!', auth: 1 },
    });
    assert.ok(!bad.ok);
    assert.deepEqual(
      bad.issues.map((i) => i.path),
      ['endpoint', 'keys.p256dh', 'keys.auth'],
    );
  });

  it('refuses keys that are not what RFC 8291 says: every push to them would fail', () => {
    const P256DH = 'BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM';
    const AUTH = 'tBHItJI5svbpez7KI4CCXg';
    const paths = (p256dh: string, auth: string) => {
      const r = validatePushSubscription({
        endpoint: 'https://push.example.com/abc',
        keys: { p256dh, auth },
      });
      return r.ok ? [] : r.issues.map((i) => i.path);
    };
    assert.deepEqual(paths(P256DH, AUTH), []);
    assert.deepEqual(paths(`${P256DH}=`, `${AUTH}==`), [], 'padded');
    assert.deepEqual(paths(P256DH.slice(0, 43), AUTH), ['keys.p256dh'], 'not 65 bytes');
    assert.deepEqual(paths(`A${P256DH.slice(1)}`, AUTH), ['keys.p256dh'], 'not an uncompressed point (0x04)');
    const point = (first: number, fill: number) =>
      Buffer.concat([Buffer.from([first]), Buffer.alloc(64, fill)]).toString('base64url');
    assert.deepEqual(paths(point(4, 1), AUTH), ['keys.p256dh'], 'not a point of the curve');
    assert.deepEqual(paths(point(4, 0), AUTH), ['keys.p256dh'], 'not a point of the curve');
    assert.deepEqual(
      paths(`${P256DH.slice(0, 1)}R${P256DH.slice(2)}`, AUTH),
      ['keys.p256dh'],
      'first byte 0x05',
    );
    assert.deepEqual(paths(P256DH, AUTH.slice(0, 20)), ['keys.auth'], 'not 16 bytes');
    assert.deepEqual(paths(P256DH, `${AUTH}AAAA`), ['keys.auth'], 'not 16 bytes');
  });
});

describe('recipientKey (the per-mailbox limit of confirmation codes)', () => {
  it('is one key for the spellings of one mailbox: case, +tag, IDN or punycode, the root dot', () => {
    const one = recipientKey('victim@bücher.example');
    for (const spelling of [
      'Victim@BÜCHER.example',
      'victim+1@bücher.example',
      'victim@xn--bcher-kva.example',
      'victim@bücher.example.',
      'victim@bücher.example\u3002',
      'victim@bücher.example\uff0e',
      'victim@BÜCHER.EXAMPLE\uff61',
      'victim+x@XN--BCHER-KVA.EXAMPLE.',
    ])
      assert.equal(recipientKey(spelling), one, spelling);
    assert.notEqual(recipientKey('other@bücher.example'), one);
    assert.notEqual(recipientKey('victim@bücher.example.org'), one);
  });
});

it('reads a Retry-After as seconds or an HTTP date, and nothing else', () => {
  const now = new Date('2026-03-01T12:00:00Z');
  assert.equal(retryAfterMs('600', now), 600_000);
  assert.equal(retryAfterMs(' 0 ', now), 0);
  assert.equal(retryAfterMs('Sun, 01 Mar 2026 12:10:00 GMT', now), 600_000);
  assert.equal(retryAfterMs('Sun, 01 Mar 2026 11:00:00 GMT', now), 0, 'a date past is now');
  assert.equal(retryAfterMs('soon', now), undefined);
  assert.equal(retryAfterMs('-5', now), undefined);
  assert.equal(retryAfterMs('', now), undefined);
  assert.equal(retryAfterMs(undefined, now), undefined);
});
