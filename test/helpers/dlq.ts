/** Dead letters as tests assert on them. */
import { listDeadLetters } from '../../src/bus/dlq.ts';
import type { BusAdmin } from '../../src/bus/types.ts';

/**
 * Every dead letter of `group` (replayed or not) as `<type> <event id>: <error>` (an empty list when there are none). A failure
 * to read the dead-letter topic propagates: an unreadable DLQ must fail the test, not pass as an empty one.
 */
export async function deadLetterLines(admin: BusAdmin, group: string): Promise<string[]> {
  return (await listDeadLetters(admin, group, { limit: Infinity, all: true })).map(
    (d) => `${d.event.type} ${d.event.id}: ${d.error}`,
  );
}
