/**
 * Runs the recurrence engine's case tables (test/unit/recurrence-cases.ts) against rrule-temporal, the
 * maintained Temporal-based RRULE library, and prints where it answers otherwise: the measurement behind
 * ADR 0003's choice to keep the hand-written engine. rrule-temporal is not a dependency:
 *
 *   npm install --no-save rrule-temporal@2.2.8 && npx tsx scripts/compare-rrule-temporal.ts
 *
 * Only `schedule` mode is compared (the calendar of RFC 5545); `after_completion` counts from the completion,
 * which no RRULE engine does. Schedule mode's next occurrence is the rule's first after the later of the
 * previous due date and the completion (missed ones are skipped), as in the engine.
 */
import { Temporal } from 'temporal-polyfill';
import { parseRecurrence, type Recurrence } from '../src/domain/recurrence.ts';
import { nextCases, previewCases } from '../test/unit/recurrence-cases.ts';

interface Rule {
  next(after: Temporal.ZonedDateTime, inclusive: boolean): Temporal.ZonedDateTime | null;
}
const MODULE = 'rrule-temporal';
const { RRuleTemporal } = (await import(MODULE).catch(() => {
  console.error(`rrule-temporal is not installed: npm install --no-save rrule-temporal@2.2.8`);
  process.exit(2);
})) as { RRuleTemporal: new (o: { rruleString: string; dtstart: Temporal.ZonedDateTime }) => Rule };

const zoned = (iso: string, tz: string) => Temporal.Instant.from(iso).toZonedDateTimeISO(tz);
const iso = (z: Temporal.ZonedDateTime | null) => (z ? new Date(z.epochMilliseconds).toISOString() : null);
const ruleOf = (input: unknown, tz: string): Recurrence | null => {
  const parsed = parseRecurrence(input, tz);
  return parsed.ok && parsed.value.mode === 'schedule' ? parsed.value : null;
};

let same = 0;
let skipped = 0;
const differ: string[] = [];
const compare = (name: string, run: () => unknown, expected: unknown) => {
  let got: unknown;
  try {
    got = run();
  } catch (err) {
    got = `throws ${(err as Error).message}`;
  }
  if (JSON.stringify(got) === JSON.stringify(expected)) same++;
  else
    differ.push(
      `- ${name}\n    expected ${JSON.stringify(expected)}\n    rrule-temporal ${JSON.stringify(got)}`,
    );
};

for (const c of nextCases) {
  const rule = ruleOf(c.input, c.tz);
  if (!rule) {
    skipped++;
    continue;
  }
  const previous = c.previousDue === undefined ? c.anchor : (c.previousDue ?? c.anchor);
  const done = c.completedAt ?? previous;
  const after = Date.parse(done) > Date.parse(previous) ? done : previous;
  compare(
    c.name,
    () =>
      iso(
        new RRuleTemporal({ rruleString: rule.rrule, dtstart: zoned(c.anchor, rule.timezone) }).next(
          zoned(after, rule.timezone),
          false,
        ),
      ),
    c.expected,
  );
}
for (const c of previewCases) {
  const rule = ruleOf(c.input, c.tz);
  if (!rule) {
    skipped++;
    continue;
  }
  compare(
    `preview: ${c.name}`,
    () => {
      const r = new RRuleTemporal({ rruleString: rule.rrule, dtstart: zoned(c.anchor, rule.timezone) });
      const out: string[] = [];
      if (Date.parse(c.anchor) > Date.parse(c.after) && c.count > 0)
        out.push(new Date(c.anchor).toISOString());
      let cursor = zoned(c.after, rule.timezone);
      while (out.length < c.count) {
        const z = r.next(cursor, false);
        if (!z) break;
        if (!out.includes(iso(z)!)) out.push(iso(z)!);
        cursor = z;
      }
      return out;
    },
    c.expected,
  );
}
console.log(
  `rrule-temporal on the engine's cases: ${same} the same, ${differ.length} otherwise, ${skipped} not comparable (after_completion)`,
);
if (differ.length) console.log(differ.join('\n'));
