/**
 * The OpenAPI document's patterns against the domain's checks: every string a documented pattern allows is
 * accepted (so a client that keeps to the document is never refused), and strings just outside it that the
 * domain refuses stay refused. fast-check draws strings from each pattern; schemathesis.test.ts checks the
 * same through the running API, these run in milliseconds and fail at the rule that broke.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createECDH } from 'node:crypto';
import fc from 'fast-check';
import {
  EMAIL_PATTERN,
  HHMM_PATTERN,
  PUSH_ENDPOINT_PATTERN,
  PUSH_KEY_PATTERNS,
  WEBHOOK_URL_PATTERN,
  validatePreferencesPatch,
  validatePushSubscription,
} from '../../src/domain/notifications.ts';
import { PRIORITY_LIST_PATTERN, parseTaskQuery } from '../../src/domain/query.ts';
import { RRULE_DOC_PATTERN, parseRecurrence } from '../../src/domain/recurrence.ts';
import {
  INSTANT_DOC_PATTERN,
  OFFSET_DOC_PATTERN,
  parseInstant,
  parseReminderOffset,
} from '../../src/domain/task-fields.ts';

const RUNS = { numRuns: 2_000, seed: 20261203 };
const matching = (pattern: string) => fc.stringMatching(new RegExp(pattern));

describe('documented grammars are accepted by the domain', () => {
  it('RRULEs: every rule of the documented grammar is accepted, in any zone', () => {
    const zones = ['UTC', 'Europe/Berlin', 'America/Chihuahua', 'Pacific/Kiritimati'];
    fc.assert(
      fc.property(matching(RRULE_DOC_PATTERN), fc.constantFrom(...zones), (rrule, tz) => {
        const r = parseRecurrence({ rrule }, tz);
        assert.ok(r.ok, `${rrule}: ${JSON.stringify(!r.ok && r.issues)}`);
      }),
      RUNS,
    );
    // Why the grammar stops at day 28: these never occur, and the domain refuses them.
    for (const rrule of ['FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30', 'FREQ=MONTHLY;BYMONTH=4,6;BYMONTHDAY=31'])
      assert.equal(parseRecurrence({ rrule }, 'UTC').ok, false, rrule);
    assert.equal(new RegExp(RRULE_DOC_PATTERN).test('FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30'), false);
  });

  it('reminder offsets: every documented duration is a positive offset of at most 366 days', () => {
    fc.assert(
      fc.property(matching(OFFSET_DOC_PATTERN), (offset) => {
        assert.ok(parseReminderOffset(offset), offset);
      }),
      RUNS,
    );
    for (const refused of ['P0D', 'PT0M', 'P367D', 'P1Y', 'P1M', 'PT', 'P'])
      assert.equal(parseReminderOffset(refused), null, refused);
  });

  it('instants: every documented year is accepted with any offset', () => {
    const instant = fc
      .tuple(
        matching(`${INSTANT_DOC_PATTERN}$`).map((prefix) => prefix.slice(0, 4)),
        fc.integer({ min: -23 * 60 - 59, max: 23 * 60 + 59 }),
      )
      .map(([year, offset]) => {
        const sign = offset < 0 ? '-' : '+';
        const abs = Math.abs(offset);
        const hh = String(Math.floor(abs / 60)).padStart(2, '0');
        const mm = String(abs % 60).padStart(2, '0');
        return `${year}-${offset % 2 ? '01-01T00:00:00' : '12-31T23:59:59'}${sign}${hh}:${mm}`;
      });
    fc.assert(
      fc.property(instant, (value) => {
        assert.ok(parseInstant(value), value);
      }),
      RUNS,
    );
  });

  it('the priority filter: every documented list is accepted, and nothing else', () => {
    fc.assert(
      fc.property(matching(PRIORITY_LIST_PATTERN), (priority) => {
        assert.ok(parseTaskQuery({ priority }).ok, priority);
      }),
      RUNS,
    );
    assert.ok(parseTaskQuery({ priority: 'HIGH,Low' }).ok, 'any case, as a task body takes');
    for (const refused of ['', 'HIGHEST', 'high,', ' high', 'high,,low', 'hİgh'])
      assert.equal(parseTaskQuery({ priority: refused }).ok, false, JSON.stringify(refused));
  });

  it('notification preferences: documented e-mail addresses, local times and webhook URLs are accepted', () => {
    fc.assert(
      fc.property(
        matching(EMAIL_PATTERN).filter((e) => e.length <= 254),
        matching(HHMM_PATTERN),
        matching(HHMM_PATTERN),
        matching(WEBHOOK_URL_PATTERN).filter((u) => u.length <= 2000),
        (email, start, end, webhook_url) => {
          const r = validatePreferencesPatch({ email, quiet_hours: { start, end }, webhook_url });
          assert.ok(
            r.ok,
            `${JSON.stringify({ email, start, end, webhook_url })}: ${JSON.stringify(!r.ok && r.issues)}`,
          );
        },
      ),
      RUNS,
    );
    for (const webhook_url of ['https://a.b/%Y9', 'https://a.b/<x>', 'http://1.2.3.999', 'ftp://a.b'])
      assert.equal(validatePreferencesPatch({ webhook_url }).ok, false, webhook_url);
    assert.equal(validatePreferencesPatch({ email: ' a@b.c' }).ok, false);
  });

  it('push subscriptions: documented endpoints and keys are accepted', () => {
    fc.assert(
      fc.property(
        matching(PUSH_ENDPOINT_PATTERN).filter((u) => u.length <= 2000),
        // A point of P-256 (the pattern says the shape; a random text of it is not on the curve).
        fc.constantFrom(
          ...Array.from({ length: 16 }, () => createECDH('prime256v1').generateKeys('base64url')),
        ),
        matching(PUSH_KEY_PATTERNS.auth),
        (endpoint, p256dh, auth) => {
          const r = validatePushSubscription({ endpoint, keys: { p256dh, auth } });
          assert.ok(r.ok, `${endpoint}: ${JSON.stringify(!r.ok && r.issues)}`);
        },
      ),
      RUNS,
    );
  });
});
