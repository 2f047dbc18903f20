/**
 * `taskflow audit verify`'s progress, for a log that takes minutes (200,000 records: 20-30 s): on stderr, never
 * stdout, where the result goes. On a terminal one line rewritten each second (cleared before the result),
 * elsewhere a line every 5 seconds; nothing for a run shorter than that. Driven by verify's own calls (each page
 * of records), which say where it is; no timer is needed beside them.
 */
import type { VerifyProgress } from './chain.ts';

export function verifyProgressReporter(
  out: { isTTY?: boolean; write(text: string): unknown },
  now: () => number = Date.now,
) {
  const tty = out.isTTY === true;
  const every = tty ? 1_000 : 5_000;
  let next = now() + every;
  let shown = false;
  return {
    onProgress(p: VerifyProgress) {
      const t = now();
      if (t < next) return;
      next = t + every;
      // The log may have grown since it was counted: never past 100 %.
      const share =
        p.recordsTotal > 0 ? ` (${Math.min(100, Math.floor((100 * p.records) / p.recordsTotal))} %)` : '';
      const line = `audit verify: ${p.records} of ${p.recordsTotal} record(s) verified${share}, ${p.users} of ${p.usersTotal} user chain(s) done`;
      out.write(tty ? `\r${line}\u001b[K` : `${line}\n`);
      shown = true;
    },
    /** Clears the terminal's progress line (before the result is printed). */
    done() {
      if (tty && shown) out.write('\r\u001b[K');
    },
  };
}
