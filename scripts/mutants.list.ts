/**
 * The guarantee mutants that `scripts/mutants` applies to src/ one at a time (docs/mutation-testing.md).
 * Each one breaks a guarantee the README or docs/architecture.md promises, in the smallest edit that does: `find` must occur
 * exactly once in `file` (else the mutant is STALE: the code moved on, so rewrite the patch against it), and
 * at least one of `tests` must fail while it is applied (else it SURVIVED: a test is missing).
 *
 * `tests` are run in order, one file at a time, until one fails; keep them few and fast. `file#pattern` runs
 * only the tests whose name (or whose suite's name) matches the regular expression `pattern`
 * (node --test-name-pattern): a suite matched by name runs whole, e.g. `#on postgres$`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Mutant {
  /** Short unique name, used on the command line (`scripts/mutants <id>...`). */
  id: string;
  /** The guarantee this edit breaks. */
  breaks: string;
  file: string;
  find: string;
  replace: string;
  /** More edits of the same file, applied after the first (a guarantee held in two places). */
  also?: readonly { find: string; replace: string }[];
  tests: readonly string[];
  /** Components besides PostgreSQL that its tests need (scripts/mutants starts them). */
  needs?: readonly ('kafka' | 'dapr')[];
}

/** The end of the field list in chain.ts `hashedContent`; each audit-hash mutant drops one field of it. */
const HASHED = [
  '    task_id: r.task_id,',
  '    operation: r.operation,',
  '    occurred_at: r.occurred_at,',
  '    recorded_at: r.recorded_at,',
  '    change: r.change,',
  '    trace_id: r.trace_id,',
  '    client_ip: r.client_ip,',
  '    user_agent: r.user_agent,',
  '  });',
].join('\n');

export const MUTANTS: readonly Mutant[] = [
  // --- one relay at a time ------------------------------------------------------------------------------
  {
    id: 'lease-always-granted',
    breaks: 'one active relay: a second holder is refused the lease while the first one renews it',
    file: 'src/store/lease.ts',
    find: '  return { held: row !== undefined, continued: row?.previous === holder, previous: row?.previous ?? null };',
    replace: '  return { held: true, continued: row?.previous === holder, previous: row?.previous ?? null };',
    tests: ['test/integration/guarantees.test.ts#^lease on', 'test/integration/outbox-relay.test.ts'],
  },
  {
    id: 'relay-late-renewal-trusted',
    breaks: 'relay fencing: a renewal answered after the lease it asked for ran out does not count as held',
    file: 'src/services/relay/index.ts',
    find: '    return held && performance.now() < this.leaseUntil;',
    replace: '    return held;',
    tests: ['test/integration/relay-interleavings.test.ts#renewal whose answer'],
    needs: ['kafka'],
  },
  {
    id: 'relay-lease-trusted-after-pause',
    breaks: 'relay fencing: a relay resumed after a pause longer than its lease asks again before it sends',
    file: 'src/services/relay/index.ts',
    find: '    if (this.leader && this.leaseUntil - performance.now() >= (2 * this.leaseMs) / 3) return true;',
    replace: '    if (this.leader) return true;',
    tests: ['test/integration/relay-failover.test.ts'],
    needs: ['kafka'],
  },
  {
    id: 'relay-takeover-resends',
    breaks: 'no copy after a failover on Kafka: a relay taking over marks what its predecessor sent unmarked',
    file: 'src/services/relay/index.ts',
    find: '    if (!this.reconciled) await this.markWhatWasSent(limit);',
    replace: '',
    tests: ['test/integration/relay-failover.test.ts#predecessor'],
    needs: ['kafka'],
  },

  {
    id: 'relay-read-back-by-own-batch',
    breaks:
      "no copy after a failover on Kafka: the read-back covers two of the predecessor's batches, whatever this relay's size",
    file: 'src/services/relay/index.ts',
    find: 'const window = 2 * Math.max(limit, this.predecessorBatch);',
    replace: 'const window = 2 * limit;',
    tests: ['test/integration/relay-interleavings.test.ts#rolling deploy'],
    needs: ['kafka'],
  },

  {
    id: 'kafka-read-back-skips-a-batch',
    breaks:
      'no copy after a failover on Kafka: the read-back (fetched without a consumer group) sees every message of its window',
    file: 'src/bus/kafka/admin.ts',
    find: 'for (const batch of records ?? []) {',
    replace: 'for (const batch of (records ?? []).slice(1)) {',
    tests: ['test/integration/kafka-admin.test.ts'],
    needs: ['kafka'],
  },

  {
    id: 'relay-takeover-looks-at-first-rows-only',
    breaks:
      'no copy after a failover on Kafka: what a predecessor sent unmarked is found by event id, behind any number of late commits',
    file: 'src/services/relay/index.ts',
    find: '        const { held, marked } = await markPublishedEvents(this.rt.db, topic, [...onBus[i]!], {',
    replace:
      '        const first = new Set((await pendingOutbox(this.rt.db, 2 * limit)).map((r) => r.event.id));\n        const { held, marked } = await markPublishedEvents(this.rt.db, topic, [...onBus[i]!].filter((id) => first.has(id)), {',
    tests: ['test/integration/relay-interleavings.test.ts#takeover'],
    needs: ['kafka'],
  },
  {
    id: 'relay-resends-deferred-batch',
    breaks: "each event on the broker once: the read that marks the last round's batch leaves that batch out",
    file: 'src/store/outbox.ts',
    find: '          WHERE published_at IS NULL AND id <> ALL($1::bigint[])${heldKeys',
    replace: '          WHERE published_at IS NULL${heldKeys',
    tests: ['test/integration/kafka-e2e.test.ts#broker is down'],
    needs: ['kafka'],
  },
  {
    id: 'relay-never-marks-deferred-batch',
    breaks: 'each event on the broker once: the last batch of a round is marked published by the next round',
    file: 'src/store/outbox.ts',
    find: '       DELETE FROM outbox WHERE id = ANY($1::bigint[])\n          AND EXISTS (SELECT 1 FROM leases WHERE name = $3',
    replace:
      '       DELETE FROM outbox WHERE false AND id = ANY($1::bigint[])\n          AND EXISTS (SELECT 1 FROM leases WHERE name = $3',
    tests: ['test/integration/kafka-e2e.test.ts#broker is down'],
    needs: ['kafka'],
  },

  {
    id: 'kafka-producer-kept-after-a-write-without-answer',
    breaks:
      'nothing lost on Kafka: a send that may have written its records gets a new producer (its sequence numbers)',
    file: 'src/bus/kafka/publisher.ts',
    find: "    if (x.code === 'PLT_KFK_PROTOCOL') return !REFUSALS.has(String(x.apiId));",
    replace:
      "    if (x.code === 'PLT_KFK_PROTOCOL') return /timed out|out of order/i.test(String(x.message));",
    tests: ['test/unit/kafka-chunks.test.ts'],
  },

  {
    id: 'chat-retry-runs-again',
    breaks: 'a chat message retried with its Idempotency-Key is answered its first answer, no tool run twice',
    file: 'src/services/api/chat.ts',
    find: "      if (held !== 'claimed') return replay(req, reply, held);",
    replace: '',
    tests: ['test/integration/chat-idempotency.test.ts#adds its task once'],
  },
  {
    id: 'notification-claimed-for-good',
    breaks:
      'a delivery whose sender stopped during each attempt is dead after NOTIFY_MAX_ATTEMPTS, not sent again',
    file: 'src/services/notifications/delivery.ts',
    find: '      if (row.attempts > this.opts.maxAttempts)',
    replace: '      if (row.attempts > Infinity)',
    tests: ['test/integration/notifications-review.test.ts#claimed more often'],
  },

  // --- one pending occurrence per recurring series -------------------------------------------------------
  {
    id: 'reopen-keeps-next-occurrence',
    breaks: 'a series never has two pending occurrences: reopening takes back the next one',
    file: 'src/store/tasks.ts',
    find: "      if (eventType === 'task.reopened' && before.series_id)\n        await this.takeBackNextOccurrence(tx, before, meta);",
    replace: '',
    tests: ['test/integration/recurrence.test.ts#reopening an occurrence'],
  },
  {
    id: 'late-completion-after-reopen',
    breaks: 'a completion handled after its task was reopened creates no next occurrence',
    file: 'src/services/recurrence/index.ts',
    find: "  if (current?.status === 'pending') return;",
    replace: '',
    tests: ['test/integration/recurrence.test.ts#reopen committed while'],
  },
  {
    id: 'recurrence-reread-unlocked',
    breaks:
      'a reopen racing the completion it takes back leaves one pending occurrence (the service holds the task)',
    file: 'src/services/recurrence/index.ts',
    find: '  const current = seen ? await read(true) : null;',
    replace: '  const current = seen ? await read(false) : null;',
    tests: ['test/integration/recurrence.test.ts#reopen that comes while'],
  },

  // --- the tamper-evident audit trail -------------------------------------------------------------------
  {
    id: 'audit-verify-no-gap-check',
    breaks: 'audit verify reports records missing from the middle of a chain (sequence gap)',
    file: 'src/services/audit/chain.ts',
    find: '      if (r.seq !== prevSeq + 1)\n        return broken(',
    replace: '      if (false)\n        return broken(',
    tests: ['test/integration/audit-chain.test.ts', 'test/integration/audit.test.ts'],
  },
  {
    id: 'audit-verify-no-prev-hash-check',
    breaks: "audit verify checks each record's prev_hash against the previous record's hash",
    file: 'src/services/audit/chain.ts',
    find: "      if (r.prev_hash !== prevHash) return broken(r, 'prev_hash does not match the previous record');\n",
    replace: '',
    tests: ['test/integration/audit-chain.test.ts', 'test/integration/audit.test.ts'],
  },
  ...(['task_id', 'operation', 'occurred_at', 'client_ip', 'user_agent'] as const).map((field): Mutant => ({
    id: `audit-hash-without-${field.replace('_', '-')}`,
    breaks: `an audit record's ${field} is covered by its hash (changing it is detected)`,
    file: 'src/services/audit/chain.ts',
    // From the field to the end of the list: unique (toRecord's occurred_at is `iso(...)`, and its
    // user_agent is followed by prev_hash).
    find: HASHED.slice(HASHED.indexOf(`    ${field}:`)),
    replace: HASHED.slice(HASHED.indexOf(`    ${field}:`)).replace(`    ${field}: r.${field},\n`, ''),
    tests: ['test/integration/audit-chain.test.ts', 'test/integration/audit.test.ts'],
  })),
  {
    id: 'audit-no-on-conflict',
    breaks:
      'a redelivered event adds no audit record and leaves the chain as it was (ON CONFLICT (event_id))',
    file: 'src/services/audit/chain.ts',
    find: '       ON CONFLICT (event_id) DO NOTHING RETURNING id::text AS id, event_id\n',
    replace: '       RETURNING id::text AS id, event_id\n',
    tests: ['test/integration/audit-chain.test.ts', 'test/integration/audit.test.ts'],
  },

  // --- task.changed numbered in the statement that writes it (docs/adr/0011) --------------------------------
  {
    id: 'task-changed-unnumbered-in-the-outbox',
    breaks: "each user's task.changed are numbered 1, 2, 3... by the outbox write",
    file: 'src/store/outbox.ts',
    find: '            CASE WHEN ev.numbered',
    replace: '            CASE WHEN false',
    tests: ['test/integration/task-changed.test.ts'],
  },
  {
    id: 'task-changed-small-append-numbered-once',
    breaks: "a small append into the embedded log numbers each of a user's task.changed, not only the first",
    file: 'src/bus/embedded/log.ts',
    find: '        const nth = s ? (taken.get(s.cte) ?? 0) + 1 : 0;',
    replace: '        const nth = s ? 1 : 0;',
    tests: ['test/integration/task-changed.test.ts'],
  },
  {
    id: 'task-changed-tail-unnumbered',
    breaks: 'the task.changed handed to consumers in this process carries the number the database gave',
    file: 'src/bus/embedded/log.ts',
    find: '          (m.event.data as { sequence: number }).sequence = Number(got[i]!.sequence);',
    replace: '          void got;',
    tests: ['test/integration/task-changed.test.ts'],
  },
  {
    id: 'key-lock-row-is-the-bare-key',
    breaks:
      "a user's task.changed sequence is theirs alone: a user whose id is `task.changed/alice` does not count in alice's",
    file: 'src/contracts/schemas.ts',
    find: 'export const keyLockStream = (key: string) => `/${key}`;',
    replace: 'export const keyLockStream = (key: string) => key;',
    tests: ['test/integration/isolation.test.ts#outbox, postgres'],
    needs: ['kafka'],
  },

  // --- idempotent consumers -----------------------------------------------------------------------------
  // Each consumer records the event ids it handled in the statement that starts its transaction; these
  // break that record where no second guard stands behind it (the audit log's unique event id, the
  // recurrence ledger and the notification deliveries' unique key are guards of their own).
  {
    id: 'audit-dedupe-and-on-conflict-ignored',
    breaks: 'a redelivered event adds no second audit record (processed ids, then the unique event id)',
    file: 'src/services/audit/chain.ts',
    find: [
      '    todo = inputs.filter((i) => fresh.delete(i.event_id)); // the first occurrence of an id wins',
      '    if (todo.length === 0) return [];',
    ].join('\n'),
    replace: '    void fresh;',
    also: [
      {
        find: '       ON CONFLICT (event_id) DO NOTHING RETURNING id::text AS id, event_id\n',
        replace: '       RETURNING id::text AS id, event_id\n',
      },
    ],
    tests: ['test/integration/duplicates.test.ts#audit', 'test/integration/audit.test.ts'],
  },

  // --- reminders fire exactly once ----------------------------------------------------------------------
  {
    id: 'reminder-claim-without-row-locks',
    breaks: 'two scheduler instances never claim the same reminder (FOR UPDATE SKIP LOCKED)',
    file: 'src/services/reminders/scheduler.ts',
    find: '            ORDER BY remind_at, id LIMIT $2 FOR UPDATE SKIP LOCKED`,',
    replace: '            ORDER BY remind_at, id LIMIT $2`,',
    tests: ['test/integration/reminders.test.ts#^reminder scheduler on postgres$'],
  },
  {
    id: 'reminder-grace-ignored',
    breaks: 'a reminder later than the grace window (downtime) becomes reminder.missed instead of firing',
    file: 'src/services/reminders/scheduler.ts',
    find: '        .filter((r) => late(r) > this.opts.graceMs && (r.due_at === null || new Date(r.due_at) <= now))',
    replace: '        .filter(() => false)',
    tests: ['test/integration/reminders.test.ts#after downtime'],
  },
  {
    id: 'reminder-missed-while-task-ahead',
    breaks: 'a reminder found late after an outage still fires while its task is ahead',
    file: 'src/services/reminders/scheduler.ts',
    find: '        .filter((r) => late(r) > this.opts.graceMs && (r.due_at === null || new Date(r.due_at) <= now))',
    replace: '        .filter((r) => late(r) > this.opts.graceMs)',
    tests: ['test/integration/reminders.test.ts#fires a reminder found late'],
  },

  // --- order per key ------------------------------------------------------------------------------------
  {
    id: 'embedded-release-blocks-heartbeat',
    breaks:
      'a consumer group member keeps its partitions while one it gives up finishes a slow handler (heartbeats go on)',
    file: 'src/bus/embedded/group-member.ts',
    find: '    for (const [id, w] of this.owned) if (!desiredIds.has(id)) this.release(id, w);',
    replace:
      '    for (const [id, w] of this.owned) if (!desiredIds.has(id)) {\n      this.release(id, w);\n      await this.releasing.get(id)?.done;\n    }',
    tests: ['test/integration/embedded-group.test.ts'],
  },
  {
    id: 'embedded-reclaims-while-releasing',
    breaks:
      'one worker per partition: a partition given up is not claimed again while its handler is in hand',
    file: 'src/bus/embedded/group-member.ts',
    find: '    const claimable = desired.filter((p) => !this.releasing.has(ownedId(p)));',
    replace: '    const claimable = desired;',
    tests: ['test/integration/embedded-group.test.ts#one worker at a time'],
  },
  {
    id: 'embedded-release-not-held',
    breaks:
      "no message handled by two members: a partition given up stays this member's while the handler in hand there finishes",
    file: 'src/bus/embedded/group-member.ts',
    find: '    await this.renewReleasing(sessionMs);',
    replace: '',
    tests: ['test/integration/embedded-group.test.ts#keeps its other partitions'],
  },
  {
    id: 'embedded-partition-not-by-key',
    breaks: 'order per key: every message of a key goes to the partition murmur2(key) picks',
    file: 'src/bus/embedded/log.ts',
    find: '      const p = partitionFor(m.key, count);',
    replace: '      const p = partitionFor(m.event.id, count);',
    tests: ['test/integration/bus-contract.test.ts#in order per key'],
  },
  {
    id: 'relay-not-in-id-order',
    breaks: 'order per key: the relay publishes outbox rows in id (commit) order',
    file: 'src/store/outbox.ts',
    find: '      ORDER BY outbox.id LIMIT $1`,',
    replace: '      ORDER BY outbox.id DESC LIMIT $1`,',
    tests: [
      'test/integration/guarantees.test.ts#^outbox relay order',
      'test/integration/outbox-relay.test.ts',
    ],
  },

  // --- at-least-once: the position moves only after the effect -----------------------------------------
  {
    id: 'commit-before-effect',
    breaks: 'at-least-once: a consumer commits its position only after the handler (or the DLQ) is done',
    file: 'src/bus/partition-worker.ts',
    find: ['      const n = await this.o.consume(run);', '      if (n > 0) this.handled = run[n - 1];'].join(
      '\n',
    ),
    replace: [
      '      this.handled = run[run.length - 1];',
      '      if (!(await this.commit())) break;',
      '      const n = await this.o.consume(run);',
    ].join('\n'),
    tests: [
      'test/integration/guarantees.test.ts#^consumer position',
      'test/integration/bus-contract.test.ts',
    ],
  },

  {
    id: 'lost-partition-keeps-working',
    breaks:
      "fencing: a member whose commit was refused (the partition is another member's) handles nothing more",
    file: 'src/bus/partition-worker.ts',
    find: '    if (this.lost) return 0;\n',
    replace: '',
    tests: ['test/unit/partition-worker.test.ts'],
  },

  // --- retries and dead letters -------------------------------------------------------------------------
  {
    id: 'dead-letter-not-published',
    breaks: 'a message that exhausted its retries is published to <group>.dlq before the position moves on',
    file: 'src/bus/middleware.ts',
    find: '        await publisher.publish([\n          cut',
    replace: '        await Promise.resolve([\n          cut',
    tests: ['test/integration/bus-contract.test.ts#dead-letters'],
  },
  {
    id: 'retry-count-ignored',
    breaks: 'a failing handler is retried CONSUMER_MAX_ATTEMPTS times before its message is dead-lettered',
    file: 'src/bus/middleware.ts',
    find: '    !(err instanceof PermanentError) && (attempt < policy.maxAttempts || isUnavailable(err));',
    replace: '    !(err instanceof PermanentError) && isUnavailable(err);',
    tests: ['test/integration/bus-contract.test.ts#dead-letters after'],
  },
  {
    id: 'consumer-skips-validation',
    breaks: 'consumers validate on read: an invalid event goes to the DLQ without reaching the handler',
    file: 'src/bus/middleware.ts',
    find: '  const problems = eventProblems(event);',
    replace: '  const problems: string[] = [];',
    tests: ['test/integration/bus-contract.test.ts#invalid events'],
  },

  // --- the transactional outbox -------------------------------------------------------------------------
  {
    id: 'task-create-outside-caller-transaction',
    breaks: "a task and its event are written in the caller's transaction (both roll back with it)",
    file: 'src/store/tasks.ts',
    find: '    if (opts.tx) await this.insert(opts.tx, [item]);',
    replace: '    if (opts.tx) await this.insert(this.db, [item]);',
    tests: ['test/integration/api.test.ts#^Task API on postgres$'],
  },
  {
    id: 'outbox-skips-validation',
    breaks: 'producers validate before writing: an event that breaks its schema never reaches the outbox',
    file: 'src/store/outbox.ts',
    find: '    assertValidEvent(e);\n',
    replace: '',
    tests: ['test/integration/outbox.test.ts', 'test/integration/guarantees.test.ts#^producer schema check'],
  },

  {
    id: 'log-skips-validation',
    breaks:
      'producers validate before writing: an event that breaks its schema never reaches the embedded log',
    file: 'src/bus/embedded/log.ts',
    find: '        assertValidEvent(e);\n',
    replace: '',
    tests: ['test/integration/embedded-log.test.ts#schema'],
  },

  // --- authentication -----------------------------------------------------------------------------------
  {
    id: 'gateway-batch-drops-one',
    breaks: "every task.changed reaches the user's socket: a run is fanned out whole",
    file: 'src/services/gateway/index.ts',
    find: '          for (const { message } of items) hub.ingest(message.event);',
    replace: '          for (const { message } of items.slice(1)) hub.ingest(message.event);',
    tests: ['test/integration/gateway.test.ts'],
  },
  {
    id: 'overload-not-shed',
    breaks: 'while the event loop lags, API requests are refused early with 503 + Retry-After',
    file: 'src/http/server.ts',
    find: '      sheddable(admissionPath(req)) && performance.now() >= armedAt && busy.fraction >= busyToShed\n',
    replace: '      false\n',
    tests: ['test/integration/limits.test.ts#^admission control by the event loop'],
  },
  {
    id: 'overload-sheds-at-start',
    breaks:
      'a process that has just become ready does not refuse its first requests (start-up lags the loop)',
    file: 'src/http/server.ts',
    find: '      sheddable(admissionPath(req)) && performance.now() >= armedAt && busy.fraction >= busyToShed\n',
    replace: '      sheddable(admissionPath(req)) && busy.fraction >= busyToShed\n',
    tests: ['test/integration/limits.test.ts#^admission control by the event loop'],
  },
  {
    id: 'overload-sheds-on-a-busy-machine',
    breaks:
      'a loop that lags because the machine is busy with other processes (the process itself idle) refuses nothing',
    file: 'src/http/server.ts',
    find: '      sheddable(admissionPath(req)) && performance.now() >= armedAt && busy.fraction >= busyToShed\n',
    replace: '      sheddable(admissionPath(req)) && performance.now() >= armedAt\n',
    tests: ['test/integration/limits.test.ts#^admission control on a busy machine'],
  },
  {
    id: 'fired-reminder-not-retired',
    breaks:
      'what quiet hours or retries hold of a fired reminder is dropped once its task is completed, deleted or moved',
    file: 'src/domain/reminders.ts',
    find: "    else if ((r.status === 'triggered' || r.status === 'missed') && r.dismiss_reason === null)\n      out.retire.push(r);\n",
    replace: '',
    tests: ['test/integration/reminders.test.ts#drops what quiet hours hold'],
  },
  {
    id: 'stale-firing-replaces-newer',
    breaks:
      "a reminder's firing handled after a later one (a redelivery, a DLQ replay) does not replace the later one's message",
    file: 'src/services/notifications/store.ts',
    find: ' AND ${FIRED_AT} > $3::timestamptz LIMIT 1`,',
    replace: ' AND ${FIRED_AT} > $3::timestamptz AND false LIMIT 1`,',
    tests: ['test/integration/reminders.test.ts#drops what quiet hours hold'],
  },
  {
    id: 'email-unconfirmed-queued',
    breaks: 'a reminder is not mailed to an address whose owner has not confirmed it',
    file: 'src/services/notifications/index.ts',
    find: '(!email || !prefs.email || !prefs.email_confirmed)',
    replace: '(!email || !prefs.email)',
    tests: ['test/integration/reminders.test.ts#confirmed with the code'],
  },
  {
    id: 'email-unconfirmed-sent',
    breaks: 'a held email is not sent to an address changed (and not confirmed) since its reminder fired',
    file: 'src/services/notifications/delivery.ts',
    find: "          if (!prefs.email_confirmed) throw new Skip('the email address is not confirmed');\n",
    replace: '',
    tests: ['test/integration/reminders.test.ts#confirmed with the code'],
  },
  {
    id: 'email-code-unbounded-guesses',
    breaks: 'a code is void after five wrong guesses',
    file: 'src/services/notifications/store.ts',
    find: '[userId, attempts, attempts >= EMAIL_CONFIRMATION.maxAttempts],',
    replace: '[userId, attempts, false],',
    also: [
      {
        find: '  if (!row.code_hash || !row.expires_at || row.attempts >= EMAIL_CONFIRMATION.maxAttempts)',
        replace: '  if (!row.code_hash || !row.expires_at)',
      },
    ],
    tests: ['test/integration/reminders.test.ts#confirmed with the code'],
  },
  {
    id: 'email-code-refused-counted',
    breaks: "a confirmation code the mail server refused is not counted against the day's codes",
    file: 'src/services/notifications/routes.ts',
    find: '      await releaseEmailCode(db, code.sendId).catch(() => undefined);\n',
    replace: '',
    tests: ['test/integration/reminders.test.ts#counts no code the mail server refused'],
  },
  {
    id: 'email-code-address-unbounded',
    breaks: 'at most five confirmation codes are mailed to one address in 24 hours, whatever the users',
    file: 'src/services/notifications/store.ts',
    find: '  if (sent.to_address >= EMAIL_CONFIRMATION.perDay)',
    replace: '  if (sent.to_address >= Infinity)',
    tests: ['test/integration/reminders.test.ts#counts no code the mail server refused'],
  },
  {
    id: 'email-change-keeps-confirmation',
    breaks: 'an address changed by a replica of the previous version is no longer confirmed',
    file: 'src/store/migrations/020_email_confirmation.sql',
    find: 'IF NEW.email IS DISTINCT FROM OLD.email THEN',
    replace: 'IF false THEN',
    tests: ['test/integration/migrate.test.ts#020 keeps addresses'],
  },
  {
    id: 'ws-message-flood',
    breaks: 'a WebSocket client flooding the gateway with messages is closed (1008)',
    file: 'src/services/gateway/hub.ts',
    find: '      if (++c.messages > MAX_CLIENT_MESSAGES)',
    replace: '      if (++c.messages > Infinity)',
    tests: ['test/integration/gateway.test.ts#floods it with messages'],
  },
  {
    id: 'audit-plain-after-keyed',
    breaks: 'a keyed audit record rewritten without the key (plain SHA-256) is refused',
    file: 'src/services/audit/chain.ts',
    find: "        if (keyedBefore) return broken(r, 'not keyed, after keyed records (rewritten without the key)');\n",
    replace: '',
    tests: ['test/integration/audit-chain.test.ts#rewritten and rehashed without the key'],
  },
  {
    id: 'audit-anchor-unkeyed',
    breaks: 'a made-up retention anchor is refused when the chain is keyed',
    file: 'src/services/audit/chain.ts',
    find: '      return anchorMac(key, { user_id: userId, seq: prevSeq, hash: prevHash }) === anchor.mac',
    replace: '      return true',
    tests: ['test/integration/audit-chain.test.ts#keys the retention anchor'],
  },
  {
    id: 'overload-sheds-health',
    breaks: 'under admission control, health, metrics and WebSockets are still served',
    file: 'src/http/server.ts',
    find: "const sheddable = (path: string) => path.startsWith('/api/') || path === '/mcp';",
    replace: 'const sheddable = (path: string) => path.length > 0;',
    tests: ['test/integration/limits.test.ts#^admission control by the event loop'],
  },
  {
    id: 'in-flight-slot-leaks',
    breaks:
      'a request whose connection closes (pipelined behind a reset) frees its MAX_REQUESTS_IN_FLIGHT slot',
    file: 'src/http/server.ts',
    find: "    socket.once('close', free);",
    replace: '',
    tests: ['test/integration/limits.test.ts#^admission control by the requests in flight'],
  },
  {
    id: 'in-flight-never-refused',
    breaks: 'past MAX_REQUESTS_IN_FLIGHT standing, API requests are refused at once (503), not queued',
    file: 'src/http/server.ts',
    find: '    if (!limit.admits(performance.now()))',
    replace: '    if (limit.count > 1e9)',
    tests: ['test/integration/limits.test.ts#^admission control by the requests in flight'],
  },
  {
    id: 'in-flight-slot-before-body',
    breaks: 'a request whose body never arrives holds no MAX_REQUESTS_IN_FLIGHT slot',
    file: 'src/http/server.ts',
    find: "  app.addHook('preHandler', async (req, reply) => {\n    if (!counted.delete(req)) return;",
    replace: "  app.addHook('onRequest', async (req, reply) => {\n    if (!counted.delete(req)) return;",
    tests: ['test/integration/limits.test.ts#^admission control by the requests in flight'],
  },
  {
    id: 'in-flight-bursts-refused',
    breaks: 'a burst above MAX_REQUESTS_IN_FLIGHT that drains within the window is not refused',
    file: 'src/http/in-flight.ts',
    find: '    return !(this.inFlight >= this.max && now - this.fullSince > this.standingMs);',
    replace: '    return !(this.inFlight >= this.max);',
    tests: ['test/unit/in-flight.test.ts'],
  },
  {
    id: 'jwt-exp-not-required',
    breaks: 'a token without exp (one that never expires) is refused',
    file: 'src/auth.ts',
    find: "    requiredClaims: ['exp'], // a token that never expires is not accepted",
    replace: '    requiredClaims: [] as string[],',
    tests: ['test/integration/auth.test.ts', 'test/integration/api.test.ts#401'],
  },
  {
    id: 'jwt-issuer-not-checked',
    breaks: 'JWT_ISSUER: a token from another issuer is refused',
    file: 'src/auth.ts',
    find: '    ...(jwt.issuer ? { issuer: jwt.issuer } : {}),\n',
    replace: '',
    tests: ['test/integration/guarantees.test.ts#^JWT issuer', 'test/integration/auth.test.ts'],
  },
  {
    id: 'jwt-audience-not-checked',
    breaks: 'JWT_AUDIENCE: a token for another audience is refused',
    file: 'src/auth.ts',
    find: '    ...(jwt.audience ? { audience: jwt.audience } : {}),\n',
    replace: '',
    tests: ['test/integration/guarantees.test.ts#^JWT issuer', 'test/integration/auth.test.ts'],
  },
  {
    id: 'relay-keeps-lease-while-failing',
    breaks: 'relay failover: a relay that cannot reach the broker leaves the lease to one that can',
    file: 'src/services/relay/index.ts',
    find: '    } catch (err) {\n      await this.standAside();\n      throw err;\n    }',
    replace: '    } catch (err) {\n      throw err;\n    }',
    tests: ['test/integration/relay-failover.test.ts#cannot reach the broker'],
    needs: ['kafka'],
  },
  {
    id: 'reminder-run-inserts-scheduled',
    breaks: 'no reminder for a task deleted, completed or moved right after its write (one consumer run)',
    file: 'src/services/reminders/store.ts',
    find: 'r.remind_at, r.status,\n              r.dismiss_reason, r.snoozed',
    replace: "r.remind_at, 'scheduled',\n              NULL, false",
    tests: ['test/integration/reminder-runs.test.ts'],
  },
  {
    id: 'push-retry-to-every-device',
    breaks: 'a push retry goes only to the devices it has not reached',
    file: 'src/services/notifications/delivery.ts',
    find: '.filter((s) => !reached.has(s.id));',
    replace: ';',
    tests: ['test/integration/reminders.test.ts#only to the device'],
  },
  {
    id: 'gateway-waits-for-heartbeat-to-expire',
    breaks:
      'per-user isolation in time: a socket is closed when its token expires, not up to a heartbeat later',
    file: 'src/services/gateway/hub.ts',
    find: '    if (lifetime < TIMER_MAX_MS) {',
    replace: '    if (false) {',
    tests: ['test/integration/gateway.test.ts#sends nothing once the token expired'],
  },
  {
    id: 'mcp-stdio-closes-under-requests',
    breaks: 'no write applied without its answer: taskflow mcp answers what was written before stdin closed',
    file: 'src/cli/mcp-stdio.ts',
    find: '(inFlight?.idle(DRAIN_MS) ?? Promise.resolve())',
    replace: 'Promise.resolve()',
    tests: ['test/integration/mcp.test.ts#before stdin closed'],
  },
  {
    id: 'publisher-creates-topics-when-told-not-to',
    breaks: 'KAFKA_ENSURE_TOPICS=false: the platform creates the topics, a send never does',
    file: 'src/bus/kafka/publisher.ts',
    find: 'if (unknown.length && this.s.ensureTopics !== false) {',
    replace: 'if (unknown.length) {',
    tests: ['test/integration/kafka-admin.test.ts#KAFKA_ENSURE_TOPICS=false'],
    needs: ['kafka'],
  },
  {
    id: 'dlq-position-past-unreplayed',
    breaks:
      'a letter replayed by id ahead of older ones moves the replay position only over a run from it: the older ones stay listed',
    file: 'src/bus/dlq.ts',
    find: 'if (blocked.has(d.dlqPartition) || offset < (cursor.get(d.dlqPartition) ?? 0n)) continue;',
    replace: 'if (offset < (cursor.get(d.dlqPartition) ?? 0n)) continue;',
    tests: ['test/integration/dlq-cli.test.ts#lists what was not replayed yet'],
  },
  {
    id: 'dlq-replay-all-sends-replayed-again',
    breaks: "a replay of all of a group's dead letters sends only those not replayed yet",
    file: 'src/bus/dlq.ts',
    find: '    : await readLetters(admin, group, { limit, all: false, ...(range ? { range } : {}) });',
    replace: '    : await readLetters(admin, group, { limit, all: true, ...(range ? { range } : {}) });',
    tests: [
      'test/integration/bus-contract.test.ts#configured attempts',
      'test/integration/bus-contract.test.ts#stays listed for the next',
    ],
  },
  {
    id: 'dlq-metric-counts-replayed',
    breaks:
      'taskflow_dlq_messages counts only dead letters not replayed yet, so its alert ends with the replay',
    file: 'src/bus/dlq.ts',
    find: 'return admin.messageCount(dlqTopic(group), await replayCursor(admin, group));',
    replace: 'return admin.messageCount(dlqTopic(group));',
    tests: ['test/integration/metrics.test.ts#counts the'],
  },
  {
    id: 'chat-provider-error-keeps-key',
    breaks: "a provider's error text reaches the chat user without the API key",
    file: 'src/services/api/chat.ts',
    find: 'withoutSecret(err.message, apiKey)',
    replace: 'err.message',
    tests: ['test/integration/chat-model-misbehaves.test.ts#API key'],
  },
  {
    id: 'chat-model-answer-unbounded',
    breaks: "a model's endless answer is no longer read past the reply's bound (nor held in memory)",
    file: 'src/services/api/chat.ts',
    find: '            streaming.abort();\n',
    replace: '',
    tests: ['test/integration/chat-model-misbehaves.test.ts#never ends'],
  },
  {
    id: 'dlq-position-moves-back',
    breaks:
      "the DLQ's replay position only moves forward: two replays, or a replay and the renewal, do not undo each other",
    file: 'src/bus/embedded/admin.ts',
    find: 'GREATEST(bus_group_offsets."offset", EXCLUDED."offset")',
    replace: 'EXCLUDED."offset"',
    tests: ['test/integration/bus-contract.test.ts#configured attempts'],
  },
  {
    id: 'delivery-one-user-takes-every-slot',
    breaks:
      "one user's deliveries take at most a quarter of the delivery loop's slots, so slow receivers hold back only that user",
    file: 'src/services/notifications/delivery.ts',
    find: 'this.opts.claimMs, this.perUser);',
    replace: 'this.opts.claimMs, this.opts.batchSize);',
    tests: ['test/integration/notifications-hostile.test.ts#take at most a quarter of the slots'],
  },
  {
    id: 'push-request-unbounded',
    breaks:
      'a push request ends at NOTIFY_TIMEOUT_MS with its answer: a push service trickling bytes holds nothing',
    file: 'src/services/notifications/outbound.ts',
    find: '    signal: AbortSignal.timeout(opts.timeoutMs),\n',
    replace: '',
    tests: ['test/integration/notifications-hostile.test.ts#ends the push within about NOTIFY_TIMEOUT_MS'],
  },
  {
    id: 'webhook-signed-without-prefix',
    breaks:
      'a webhook is signed with an HMAC keyed with the whole webhook_secret (whsec_...), as receivers are told',
    file: 'src/domain/notifications.ts',
    find: "  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;",
    replace:
      "  return `sha256=${createHmac('sha256', secret.replace(/^whsec_/, '')).update(body).digest('hex')}`;",
    tests: ['test/unit/notifications.test.ts#whsec_ prefix included'],
  },
  {
    id: 'webhook-generated-secret-not-kept',
    breaks:
      'a webhook is always signed: a webhook_url saved without a secret is signed with the one generated',
    file: 'src/services/notifications/store.ts',
    find: '    next.webhook_secret = generatedSecret;\n',
    replace: '',
    tests: ['test/integration/notifications-hostile.test.ts#saved without a secret'],
  },
  {
    id: 'blocked-address-retried',
    breaks: 'a delivery to a webhook or push endpoint on a non-public address is marked dead at once',
    file: 'src/services/notifications/delivery.ts',
    find: '      err instanceof BlockedAddressError ||\n',
    replace: '      (BlockedAddressError && false) ||\n',
    tests: ['test/integration/notifications-hostile.test.ts#non-public address dead at its first attempt'],
  },
  {
    id: 'idempotency-replays-deleted-task',
    breaks:
      'a retried create whose first task was deleted since answers 409, not the id of a task that is gone',
    file: 'src/store/tasks.ts',
    find: '    if (!row.task_exists)',
    replace: '    if (false)',
    tests: ['test/integration/idempotency.test.ts#was deleted since'],
  },
  {
    id: 'datadir-lock-other-host-taken-over',
    breaks:
      'one process per PGlite data directory: a lock of a process on another host (a shared volume) is kept',
    file: 'src/store/data-dir-lock.ts',
    find: '  if (owner.host !== hostname()) return true;\n',
    replace: '',
    tests: ['test/integration/data-dir-lock.test.ts#another host'],
  },
  {
    id: 'datadir-lock-not-renewed',
    breaks:
      'one process per PGlite data directory: a live holder in another container stops renewing its lock, which is then taken over after LOCK_STALE_MS',
    file: 'src/store/data-dir-lock.ts',
    find: '        utimesSync(file, now, now);\n',
    replace: '',
    tests: ['test/integration/data-dir-lock.test.ts#is renewed by its holder'],
  },
  {
    id: 'datadir-lock-lost-holder-writes-on',
    breaks:
      'one process per PGlite data directory: a holder whose lock another took over (it was paused) goes on writing beside the new owner',
    file: 'src/store/data-dir-lock.ts',
    find: '  process.exit(1);\n}\n',
    replace: '}\n',
    tests: ['test/integration/data-dir-lock.test.ts#taken over from a running server'],
  },
  {
    id: 'webhook-secret-kept-for-new-url',
    breaks:
      "a webhook is signed by its receiver's own secret: a changed webhook_url without a secret keeps the previous receiver's",
    file: 'src/services/notifications/store.ts',
    find: '        : patch.webhook_url !== undefined && patch.webhook_url !== current.webhook_url\n',
    replace: '        : false\n',
    tests: ['test/integration/notifications-hostile.test.ts#gives a new webhook_url saved without a secret'],
  },
  {
    id: 'pglite-never-vacuumed',
    breaks: 'the embedded database reuses the space retention frees: nothing vacuums it',
    file: 'src/store/pglite-maintenance.ts',
    find: '  ...(due.vacuum ? [{ statement: `VACUUM ${due.table}`, why: due.vacuum }] : []),\n',
    replace: '',
    tests: ['test/integration/pglite-maintenance.test.ts#keeps tables that retention prunes bounded'],
  },
  {
    id: 'deleted-task-reminders-kept',
    breaks:
      "what a deleted task left is forgotten past the ledger's retention: its reminders (and title) are kept",
    file: 'src/services/reminders/store.ts',
    find: '       DELETE FROM reminder_schedule s USING doomed d WHERE s.task_id = d.task_id RETURNING 1\n',
    replace: '       SELECT 1 FROM reminder_schedule s JOIN doomed d ON s.task_id = d.task_id WHERE false\n',
    tests: ['test/integration/deleted-task-rows.test.ts#prunes the markers, reminders and series'],
  },
  {
    id: 'chat-page-begins-with-tool-answers',
    breaks: "a conversation's page keeps a tool's answers with the assistant message that called it",
    file: 'src/store/chat.ts',
    find: "           (SELECT min(id) FROM window_ WHERE role <> 'tool'),\n",
    replace: '           (SELECT min(id) FROM window_),\n',
    tests: ['test/integration/chat-conversation-pages.test.ts#answers the last 100 messages'],
  },
  {
    id: 'delivery-sent-after-claim-lapsed',
    breaks:
      'a reminder is sent once: a worker stalled past its claim sends beside the instance that claimed it again',
    file: 'src/services/notifications/delivery.ts',
    find: '    return left >= timeoutMs + (claimMs - timeoutMs) / 2;\n',
    replace: '    return left >= -Infinity;\n',
    tests: ['test/integration/notifications-claim-lapse.test.ts'],
  },
  {
    id: 'graceful-stop-closes-under-requests',
    breaks:
      'graceful shutdown: requests in flight at SIGTERM are answered before the targets and the database close',
    file: 'src/process.ts',
    find: '        await http.app.close(); // stop accepting, let in-flight requests finish',
    replace: '        void http.app.close(); // stop accepting, let in-flight requests finish',
    tests: ['test/integration/signals.test.ts#SIGTERM with a request in flight'],
  },
  {
    id: 'audit-verify-skips-below-anchor',
    breaks:
      'audit verify recomputes every chain: a record put at or before a retention anchor (or below 1) is refused',
    file: 'src/services/audit/chain.ts',
    find: '  if (below)\n',
    replace: '  if (below && false)\n',
    tests: ['test/integration/audit-verify-edges.test.ts#numbered below 1'],
  },
  {
    id: 'create-lost-answer-not-read-back',
    breaks:
      'a create committed whose answer was lost is answered with its task, not 503 (a retry made it twice)',
    file: 'src/store/tasks.ts',
    find: '    if (!there) throw err;',
    replace: '    throw err;',
    tests: [
      'test/integration/lost-reply.test.ts#is answered 201',
      'test/integration/lost-reply.test.ts#committed after its lost answer',
    ],
  },
  {
    id: 'embedded-run-ignores-lapsed-lease',
    breaks: 'one member per partition: a member whose lease lapsed stops its run in hand between messages',
    file: 'src/bus/embedded/group-member.ts',
    find: '        signal: AbortSignal.any([signal, lapsed.signal]),',
    replace: '        signal,',
    // With the lease asked before each message as well (stillOwned), both fences go: either one holds it.
    also: [{ find: '        stillOwned,\n', replace: '' }],
    tests: ['test/integration/embedded-edges.test.ts#in the middle of a run'],
  },
  {
    id: 'embedded-retention-one-page',
    breaks:
      "the embedded bus deletes everything older than its topic's retention, not only the first page of it",
    file: 'src/bus/embedded/admin.ts',
    find: '      if (r.rowCount === 0) return deleted;',
    replace: '      if (r.rowCount >= 0) return deleted + r.rowCount;',
    tests: ['test/integration/embedded-log.test.ts#older than its topic'],
  },
  {
    id: 'cursor-ignores-filters',
    breaks: "a list cursor is refused with other filters than its page's (it skipped tasks without a word)",
    file: 'src/domain/query.ts',
    find: '    else if (cursor.f !== undefined && cursor.f !== filters)',
    replace: '    else if (cursor.f === undefined && cursor.f !== filters)',
    tests: ['test/integration/query-edges.test.ts#cursor with other filters'],
  },
  {
    id: 'title-sort-byte-order',
    breaks: 'sort=title puts an accented initial with its letter (ICU root collation), not after "z"',
    file: 'src/store/tasks.ts',
    find: '  icu ? `lower(${text} COLLATE "und-x-icu")` : `lower(${text})`;',
    replace: '  `lower(${text})`;',
    tests: ['test/integration/query-edges.test.ts#accented initials'],
  },
  {
    id: 'dapr-bulk-letter-left-to-daprd',
    breaks:
      "nothing lost on Dapr: a bulk entry's dead letter is written by the app (held until written), not answered DROP",
    file: 'src/bus/dapr/subscriber.ts',
    find: '      const entryLettersHere = opts.deadLetters !== false && this.publisher !== undefined;',
    replace: '      const entryLettersHere = false;',
    tests: ['test/integration/dapr-edges.test.ts#dead-letter topic refuses'],
    needs: ['kafka', 'dapr'],
  },
  {
    id: 'embedded-lease-asked-by-timer-only',
    breaks:
      'one member per partition on the embedded bus: a run stops before its next message once the lease lapsed, not only when a timer notices',
    file: 'src/bus/embedded/group-member.ts',
    find: '        stillOwned,\n',
    replace: '',
    tests: ['test/integration/embedded-edges.test.ts#event loop was held'],
  },
  {
    id: 'embedded-lease-on-wall-clock',
    breaks:
      'one member per partition on the embedded bus: a lease is held by the monotonic clock, not the wall clock',
    file: 'src/bus/embedded/group-member.ts',
    find: '    const stillOwned = () => performance.now() < leaseUntil();',
    replace: '    const stillOwned = () => Date.now() < leaseUntil();',
    also: [
      { find: '    const asked = performance.now();', replace: '    const asked = Date.now();' },
      {
        find: '      const left = leaseUntil() - performance.now();',
        replace: '      const left = leaseUntil() - Date.now();',
      },
    ],
    tests: ['test/integration/embedded-edges.test.ts#wall clock stepped back'],
  },
  {
    id: 'postgres-aborted-commit-taken',
    breaks:
      'nothing signalled that was not written: a transaction a caught statement aborted fails at COMMIT on PostgreSQL',
    file: 'src/store/db.ts',
    find: "      if ((await client.query('COMMIT')).command === 'ROLLBACK')",
    replace: "      if ((await client.query('COMMIT')).command === 'NEVER')",
    tests: ['test/integration/postgres-statements.test.ts#caught statement aborted'],
  },
  {
    id: 'postgres-session-zone-kept',
    breaks: "instants read the same whatever the server's zone: sessions run in UTC",
    file: 'src/store/database-url.ts',
    find: "  const utc = '-c TimeZone=UTC';",
    replace: "  const utc = '';",
    tests: ['test/integration/postgres-statements.test.ts#another time zone'],
  },
  {
    id: 'dapr-bulk-unbounded-bytes',
    breaks: "nothing stuck on Dapr: a bulk publish request stays under daprd's body limit",
    file: 'src/bus/dapr/publisher.ts',
    find: '    if (chunk.entries.length > 0 && (chunk.entries.length === MAX_BULK || bytes + size > maxBytes)) {',
    replace: '    if (chunk.entries.length > 0 && chunk.entries.length === MAX_BULK) {',
    tests: ['test/integration/dapr-edges.test.ts#body limit'],
    needs: ['kafka', 'dapr'],
  },
  {
    id: 'email-send-unbounded',
    breaks:
      'a reminder mailed once: a mail conversation ends within NOTIFY_TIMEOUT_MS, before its claim can lapse',
    file: 'src/services/notifications/channels.ts',
    find: '      await this.transport.sendMail({ ...mail, signal });',
    replace: '      await this.transport.sendMail(mail);',
    tests: ['test/integration/notifications-review.test.ts#line at a time'],
  },
  {
    id: 'chat-failure-after-tools-forgotten',
    breaks:
      "a chat message's tools run once per Idempotency-Key: a turn failing on our side after a write keeps its answer",
    file: 'src/services/api/chat.ts',
    find: "      if ((err as { code?: string }).code !== '23503') return failedAfterTools(err);",
    replace: "      if ((err as { code?: string }).code !== '23503') throw err;",
    tests: ['test/integration/chat-idempotency.test.ts#could not be stored'],
  },
  {
    id: 'create-lost-answer-read-before-commit',
    breaks:
      'a create whose statement committed after its connection went is answered with its task (written again, not read back early)',
    file: 'src/store/tasks.ts',
    find: '      try {\n        await this.insert(this.db, items);\n      } catch (again) {',
    replace: '      try {\n        return await this.confirm(items, err);\n      } catch (again) {',
    tests: ['test/integration/lost-reply.test.ts#committed after its lost answer'],
  },
  {
    id: 'kafka-valueless-header-undefined',
    breaks:
      'nothing stuck on Kafka: a record with a header without a value is dead-lettered and its partition reads on',
    file: 'src/bus/kafka/group-member.ts',
    find: "        headerValue: (value?: Buffer) => value?.toString('utf8') ?? '',",
    replace: '        headerValue: stringDeserializer,',
    tests: ['test/integration/kafka-foreign-records.test.ts#header without a value'],
    needs: ['kafka'],
  },
  {
    id: 'dead-letter-too-large-retried',
    breaks: "nothing stuck: a dead letter over the broker's limit is written cut, and its partition reads on",
    file: 'src/bus/middleware.ts',
    find: '        if (!cut && TOO_LARGE.test(errorText(err))) {',
    replace: '        if (!cut && TOO_LARGE.test(errorText(err)) && attempt < 0) {',
    tests: ['test/integration/kafka-foreign-records.test.ts#over the broker limit'],
    needs: ['kafka'],
  },
  {
    id: 'avro-newer-event-trimmed',
    breaks:
      'nothing lost in a rolling upgrade: a relay writes an event of a newer version than its own with its new fields',
    file: 'src/bus/kafka/codec.ts',
    find: "      this.opts.encoding === 'avro' && isEventType(event.type) && !newerThanOurs(event)",
    replace: "      this.opts.encoding === 'avro' && isEventType(event.type)",
    tests: ['test/integration/avro.test.ts#newer version than its own'],
  },
  {
    id: 'quiet-hours-change-moves-retries',
    breaks: "a receiver's Retry-After holds: a change of quiet hours moves only what they hold",
    file: 'src/services/notifications/store.ts',
    find: "        WHERE user_id = $1 AND status = 'pending' AND claimed_by IS NULL AND next_attempt_at = held_until",
    replace: "        WHERE user_id = $1 AND status = 'pending' AND claimed_by IS NULL",
    tests: ['test/integration/quiet-hours-change.test.ts'],
  },
  {
    id: 'jwks-cold-outage-fetch-per-request',
    breaks: 'a JWKS provider never reached is asked once per cooldown, not by every request',
    file: 'src/auth.ts',
    find: '    if (!keys && failed && Date.now() - failed.at < timing.cooldownMs) throw unreachable(failed.err);',
    replace: '',
    tests: ['test/integration/auth-edges.test.ts#never reached'],
  },
  {
    id: 'stop-keeps-answered-connections',
    breaks:
      'a stop under keep-alive traffic goes on once its requests are answered: the targets stop, offsets committed',
    file: 'src/http/server.ts',
    find: "    if (closing) reply.header('connection', 'close');",
    replace: '',
    tests: ['test/integration/signals.test.ts#keep-alive'],
  },
  {
    id: 'preview-ignores-unknown-parameters',
    breaks: 'the occurrences preview never answers a query it did not apply',
    file: 'src/services/recurrence/routes.ts',
    find: '  if (issues.length) throw new ValidationError(issues);\n  return query as',
    replace: '  return query as',
    tests: ['test/integration/recurrence.test.ts#preview'],
  },
  {
    id: 'pglite-loop-never-turns',
    breaks:
      'one process per PGlite data directory: statements run back to back on PGlite let no timer run (the lock goes unrenewed, another process takes the directory over)',
    file: 'src/store/pglite-session.ts',
    find: '    if (performance.now() - this.lastTurn >= LOOP_TURN_EVERY_MS) {',
    replace: '    if (false) {',
    tests: ['test/integration/pglite-event-loop.test.ts'],
  },
  {
    id: 'dev-sign-in-any-account',
    breaks:
      'per-user isolation on the development default: another account of the machine signs in as any user',
    file: 'src/services/api/dev-sign-in.ts',
    find: '    return uid === undefined || uid === ownUid;',
    replace: '    return uid !== ownUid || uid === ownUid;',
    tests: ['test/integration/dev-sign-in.test.ts#another account'],
  },
  {
    id: 'unread-inbox-unbounded',
    breaks: "bounded storage: a user's unread in-app notifications grow without bound",
    file: 'src/services/notifications/store.ts',
    find: '                  ) ranked WHERE newer > $3)',
    replace: '                  ) ranked WHERE newer > $3 + 1000000)',
    tests: ['test/integration/notification-retention.test.ts#newest unread'],
  },
  {
    id: 'dapr-partial-publish-resent-whole',
    breaks:
      'no duplicates without bound: a Dapr bulk publish the broker refused one event of is sent again whole, and blocks every key',
    file: 'src/services/relay/index.ts',
    find: '          if (written.length === 0) throw err;',
    replace: '          throw err;',
    tests: ['test/integration/dapr-bulk-refusal.test.ts'],
    needs: ['kafka', 'dapr'],
  },
  {
    id: 'readiness-check-unbounded',
    breaks: 'operability: /readyz waits for a stalled database instead of answering 503 naming it',
    file: 'src/http/server.ts',
    find: "          await within(check(), READINESS_CHECK_TIMEOUT_MS, 'the check');",
    replace: "          await within(check(), 1e9, 'the check');",
    tests: ['test/integration/readiness-stall.test.ts'],
  },
  {
    id: 'dapr-unnamed-refusal-taken-as-written',
    breaks:
      'nothing lost on Dapr: a refused bulk publish that names none of its entries is taken for written, and the relay marks unsent events published',
    file: 'src/bus/dapr/publisher.ts',
    find: '        if (!positions.some((i) => failed.has(String(i)))) {',
    replace: '        if (false) {',
    tests: ['test/integration/dapr-bulk-unnamed-refusal.test.ts'],
  },
];

// --------------------------------------------------------------------------------------------------------

/** A test spec's file and name pattern (`file#pattern`). */
export interface Selection {
  file: string;
  pattern: string | undefined;
  key: string;
}

export const selection = (spec: string): Selection => {
  const at = spec.indexOf('#');
  return at < 0
    ? { file: spec, pattern: undefined, key: spec }
    : { file: spec.slice(0, at), pattern: spec.slice(at + 1), key: spec };
};

const occurrences = (text: string, find: string) => {
  let n = 0;
  for (let at = text.indexOf(find); at >= 0; at = text.indexOf(find, at + 1)) n++;
  return n;
};

/** Why a mutant cannot be applied to the current code, or undefined when it can. */
export function staleness(m: Mutant, dir: string): string | undefined {
  const path = join(dir, m.file);
  if (!existsSync(path)) return `${m.file} does not exist`;
  const text = readFileSync(path, 'utf8');
  for (const find of [m.find, ...(m.also ?? []).map((e) => e.find)]) {
    const n = occurrences(text, find);
    if (n === 0) return `its search text is no longer in ${m.file}: ${JSON.stringify(find.slice(0, 60))}`;
    if (n > 1) return `its search text occurs ${n} times in ${m.file} (must be once)`;
  }
  const missing = m.tests.map((t) => selection(t).file).filter((f) => !existsSync(join(dir, f)));
  if (missing.length) return `test file(s) ${missing.join(', ')} do not exist`;
  return undefined;
}
