/**
 * Publishing through the sidecar: structured CloudEvents, key = `partitionKey`, in rounds of distinct keys
 * through the bulk publish API, or one by one when the sidecar has none.
 */
import type { Logger } from '../../observability/logger.ts';
import { PartialPublishError, type OutgoingMessage, type Publisher } from '../types.ts';
import { errorMessage, errorText } from '../../error-text.ts';
import { isTraceparent } from '../../observability/trace.ts';
import { sidecarHeaders, type DaprSettings } from './settings.ts';

export class DaprPublisher implements Publisher {
  private readonly base: string;
  private bulk: boolean;
  private closed = false;
  constructor(
    private readonly s: DaprSettings,
    private readonly log?: Logger,
  ) {
    this.base = `http://${s.host ?? '127.0.0.1'}:${s.httpPort}`;
    this.bulk = s.bulk !== false;
  }

  /**
   * Publishes in rounds: round n holds the n-th message of every key, so a round never has two messages of
   * one key and the next round starts only after the whole round is answered. One key's messages thus stay
   * in order whatever daprd's (non-idempotent) Kafka producer does inside a request. A message the broker
   * refuses (too large for the topic, say) holds its key's later ones back, and the other keys go on: the
   * error then says which messages were written (PartialPublishError), so the caller marks them and sends the
   * rest again, not the whole batch. A failure that says nothing of what was written (no answer, a request
   * refused whole), or a round of which nothing was written (a broker down refuses every entry), stops all.
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    if (this.closed) throw new Error('Dapr publisher is closed');
    const rounds: number[][] = [];
    const seen = new Map<string, number>();
    for (const [i, m] of messages.entries()) {
      const n = seen.get(m.key) ?? 0;
      seen.set(m.key, n + 1);
      (rounds[n] ??= []).push(i);
    }
    const written: number[] = [];
    const refused = new Map<number, string>();
    /** Keys with a message not written: their later messages wait for it (per-key order). */
    const held = new Set<string>();
    let failure: unknown;
    for (const round of rounds) {
      const go = round.filter((i) => !held.has(messages[i]!.key));
      if (go.length === 0) continue;
      const outcome = await this.publishRound(messages, go);
      written.push(...outcome.written);
      for (const [i, why] of outcome.refused) refused.set(i, why);
      const done = new Set(outcome.written);
      for (const i of go) if (!done.has(i)) held.add(messages[i]!.key);
      if (outcome.failure !== undefined || outcome.written.length === 0) {
        failure = outcome.failure;
        break;
      }
    }
    if (written.length === messages.length) return;
    if (refused.size === 0 && written.length === 0 && failure !== undefined) throw failure;
    throw this.partialFailure(messages, written, refused, failure);
  }

  /**
   * The error of a publish that did not write everything: which events daprd refused and why (its own words,
   * per entry), how many were written, and the failure that stopped it, if one did.
   */
  private partialFailure(
    messages: readonly OutgoingMessage[],
    written: readonly number[],
    refused: ReadonlyMap<number, string>,
    failure: unknown,
  ): Error {
    const topics = [...new Set(messages.map((m) => m.topic))].join(',');
    const named = [...refused].slice(0, MAX_NAMED).map(([i, why]) => {
      const m = messages[i]!;
      return `event ${m.event.id} (key ${m.key}): ${why}`;
    });
    if (refused.size > MAX_NAMED) named.push(`${refused.size - MAX_NAMED} more`);
    const notSent = messages.length - written.length - refused.size;
    const text = [
      refused.size > 0
        ? `Dapr publish to ${this.s.pubsubName}/${topics}: daprd refused ${refused.size} of ${messages.length} messages (${written.length} written${notSent > 0 ? `, ${notSent} not sent` : ''}): ${named.join('; ')}`
        : `${failure === undefined ? `Dapr publish to ${this.s.pubsubName}/${topics} failed` : errorMessage(failure)} (${written.length} of ${messages.length} messages written before it)`,
      ...(refused.size > 0 && failure !== undefined ? [`then: ${errorMessage(failure)}`] : []),
    ].join('; ');
    const options = failure === undefined ? undefined : { cause: failure };
    return new PartialPublishError(text, written, [...refused.keys()], options);
  }

  /** A round (of distinct keys): through the bulk API, and one by one what a bulk request refused. */
  private async publishRound(messages: readonly OutgoingMessage[], round: number[]): Promise<RoundOutcome> {
    // A single message is cheaper through /v1.0/publish than through a one-entry bulk request.
    if (!this.bulk || round.length === 1) return this.publishEach(messages, round);
    const byTopic = new Map<string, number[]>();
    for (const i of round) {
      const topic = messages[i]!.topic;
      const list = byTopic.get(topic);
      if (list) list.push(i);
      else byTopic.set(topic, [i]);
    }
    const chunks = [...byTopic.entries()].flatMap(([topic, list]) =>
      bulkChunks(messages, list).map((chunk) => ({ topic, ...chunk })),
    );
    const results = await Promise.allSettled(chunks.map((c) => this.publishBulk(c.topic, c.entries)));
    // The sidecar has no bulk API: this round (and the next ones) one by one.
    if (!this.bulk) return this.publishEach(messages, round);
    const outcome: RoundOutcome = { written: [], refused: new Map() };
    const again: number[] = [];
    const bulkReasons = new Map<number, string>();
    for (const [n, r] of results.entries()) {
      const { positions } = chunks[n]!;
      if (r.status === 'fulfilled') outcome.written.push(...positions);
      else if (failedEntriesOf(r.reason)) {
        const failed = new Map(failedEntriesOf(r.reason)!.map((e) => [e.entryId, e.error]));
        // A refusal that names none of the request's entries (an empty list, entries without ids) says nothing
        // of what was written: taken for "all written", unsent events would be marked published (lost).
        if (!positions.some((i) => failed.has(String(i)))) {
          outcome.failure ??= r.reason;
          continue;
        }
        for (const i of positions) {
          const why = failed.get(String(i));
          if (why === undefined) outcome.written.push(i);
          else {
            again.push(i);
            bulkReasons.set(i, `${(r.reason as DaprError).errorCode ?? 'refused'}: ${why}`);
          }
        }
      } else outcome.failure ??= r.reason;
    }
    if (again.length === 0) return outcome;
    // Kafka refuses a partition's whole batch for one record in it: the refused entries go again one by one,
    // so those that were only batched with it are written, and the one refused says so alone.
    if (outcome.failure !== undefined) {
      for (const i of again) outcome.refused.set(i, bulkReasons.get(i)!);
      return outcome;
    }
    const each = await this.publishEach(messages, again);
    outcome.written.push(...each.written);
    for (const [i, why] of each.refused) outcome.refused.set(i, why);
    outcome.failure = each.failure;
    return outcome;
  }

  /**
   * Messages of distinct keys one by one, `publishConcurrency` at a time. A refusal daprd answered for one of
   * them does not stop the others; a failure that says nothing of what was written does (none starts after
   * it), and so do as many refusals as run at once while nothing was written (a broker that takes nothing).
   */
  private async publishEach(
    messages: readonly OutgoingMessage[],
    positions: readonly number[],
  ): Promise<RoundOutcome> {
    const limit = this.s.publishConcurrency ?? 4;
    const outcome: RoundOutcome = { written: [], refused: new Map() };
    const queue = [...positions];
    const worker = async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        if (outcome.failure !== undefined || (outcome.written.length === 0 && outcome.refused.size >= limit))
          return;
        try {
          await this.publishOne(messages[i]!);
          outcome.written.push(i);
        } catch (err) {
          const why = refusalOf(err);
          if (why === undefined) outcome.failure ??= err;
          else outcome.refused.set(i, why);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, queue.length)) }, worker));
    return outcome;
  }

  private async post(url: string, what: string, init: RequestInit): Promise<Response> {
    const timeout = this.s.publishTimeoutMs ?? 10_000;
    try {
      return await fetch(url, {
        method: 'POST',
        ...init,
        headers: { ...(init.headers as Record<string, string>), ...sidecarHeaders(this.s) },
        signal: AbortSignal.timeout(timeout),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why =
        err instanceof Error && err.name === 'TimeoutError'
          ? `no answer within ${timeout} ms`
          : (cause?.code ?? cause?.message ?? errorText(err));
      throw new Error(
        `Dapr publish to ${what} failed: sidecar unreachable at ${this.base} (${why}); is daprd running with --dapr-http-port ${this.s.httpPort} (DAPR_HTTP_PORT)?`,
        { cause: err },
      );
    }
  }

  private async failure(res: Response, what: string): Promise<DaprError> {
    const text = await res.text().catch(() => '');
    let detail = text.slice(0, 500);
    let body: DaprErrorBody | undefined;
    try {
      body = JSON.parse(text) as DaprErrorBody;
    } catch {
      /* not JSON */
    }
    const failedEntries = Array.isArray(body?.failedEntries)
      ? body.failedEntries.map((e) => ({ entryId: String(e?.entryId), error: String(e?.error ?? '') }))
      : undefined;
    if (body?.errorCode || body?.message || failedEntries) {
      const entries = failedEntries?.slice(0, MAX_NAMED).map((e) => `entry ${e.entryId}: ${e.error}`) ?? [];
      detail = [`${body?.errorCode ?? ''} ${body?.message ?? ''}`.trim(), ...entries]
        .filter(Boolean)
        .join('; ');
    }
    const err: DaprError = new Error(
      `Dapr publish to ${this.s.pubsubName}/${what} failed: HTTP ${res.status}${detail ? ` ${detail}` : ''}${res.status === 401 ? ' (the sidecar wants an API token: set DAPR_API_TOKEN)' : ''}`,
    );
    if (body?.errorCode) err.errorCode = body.errorCode;
    // daprd's reason without its wrapping ("error when publishing to topic t in pubsub p: ...").
    const reason = body?.details?.find((d) => typeof d?.metadata?.error === 'string')?.metadata?.error;
    if (body?.errorCode) err.reason = `${body.errorCode}: ${reason ?? body.message ?? `HTTP ${res.status}`}`;
    if (failedEntries) err.failedEntries = failedEntries;
    return err;
  }

  /** One message: the event's traceparent goes as the HTTP header, or daprd replaces it with its own. */
  private async publishOne(m: OutgoingMessage): Promise<void> {
    const query = new URLSearchParams({ 'metadata.partitionKey': m.key });
    // Other metadata entries become Kafka record headers (the dead-letter failure headers, for instance).
    for (const [k, v] of Object.entries(m.headers ?? {})) query.set(`metadata.${k}`, v);
    const url = `${this.base}/v1.0/publish/${encodeURIComponent(this.s.pubsubName)}/${encodeURIComponent(
      m.topic,
    )}?${query}`;
    const headers: Record<string, string> = { 'content-type': 'application/cloudevents+json' };
    // Only a well-formed one: a header fetch cannot send (an invalid event's, dead-lettered) failed every try.
    if (isTraceparent(m.event.traceparent)) headers.traceparent = m.event.traceparent;
    const res = await this.post(url, m.topic, { headers, body: JSON.stringify(m.event) });
    if (!res.ok) throw await this.failure(res, m.topic);
    await res.body?.cancel();
  }

  /**
   * Serialized entries (bulkEntry) of one topic and distinct keys in one request (bulk publish API, alpha in
   * 1.16). A refusal of some entries throws with daprd's `failedEntries`: the others were written.
   */
  private async publishBulk(topic: string, entries: readonly string[]): Promise<void> {
    const url = `${this.base}/v1.0-alpha1/publish/bulk/${encodeURIComponent(
      this.s.pubsubName,
    )}/${encodeURIComponent(topic)}`;
    const res = await this.post(url, topic, {
      headers: { 'content-type': 'application/json' },
      body: `[${entries.join(',')}]`,
    });
    if (res.ok) {
      await res.body?.cancel();
      return;
    }
    const err = await this.failure(res, topic);
    if ((res.status === 404 || res.status === 405) && !err.errorCode?.startsWith('ERR_PUBSUB')) {
      if (this.bulk)
        this.log?.warn(
          { err: err.message },
          'daprd has no bulk publish API; publishing one message at a time',
        );
      this.bulk = false;
      return;
    }
    throw err;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Entries per bulk publish request. */
const MAX_BULK = 500;
/**
 * Bytes of entries per bulk publish request: daprd refuses a body over its `--max-body-size` (4 MiB by default)
 * with a 400, and the relay would send the same batch again for ever (450 events of 10,000-character
 * descriptions are 4.7 MB). A quarter under it leaves room for a sidecar's own limits on what it forwards.
 */
const MAX_BULK_BYTES = 3 * 1024 * 1024;

/**
 * One bulk entry, serialized. It carries `traceid` = the event's traceparent: the only way daprd keeps a
 * per-entry traceparent there. Its id is the message's position in the publish: daprd names refused entries by it.
 */
const bulkEntry = (m: OutgoingMessage, position: number): string =>
  JSON.stringify({
    entryId: String(position),
    event: m.event.traceparent ? { ...m.event, traceid: m.event.traceparent } : m.event,
    contentType: 'application/cloudevents+json',
    metadata: { ...(m.headers ?? {}), partitionKey: m.key },
  });

/**
 * The messages at `positions` (one topic's of one round) as the entries of bulk requests, each at most
 * MAX_BULK entries and `maxBytes`, with the positions each request carries.
 */
export function bulkChunks(
  messages: readonly OutgoingMessage[],
  positions: readonly number[],
  maxBytes = MAX_BULK_BYTES,
): { positions: number[]; entries: string[] }[] {
  const chunks: { positions: number[]; entries: string[] }[] = [];
  let chunk: { positions: number[]; entries: string[] } = { positions: [], entries: [] };
  let bytes = 0;
  for (const i of positions) {
    const entry = bulkEntry(messages[i]!, i);
    const size = Buffer.byteLength(entry) + 1;
    if (chunk.entries.length > 0 && (chunk.entries.length === MAX_BULK || bytes + size > maxBytes)) {
      chunks.push(chunk);
      chunk = { positions: [], entries: [] };
      bytes = 0;
    }
    chunk.positions.push(i);
    chunk.entries.push(entry);
    bytes += size;
  }
  if (chunk.entries.length > 0) chunks.push(chunk);
  return chunks;
}

/** Refused messages an error names one by one (the rest are counted). */
const MAX_NAMED = 5;

/** What daprd answers to a publish it did not do (Dapr's error body; `failedEntries` of the bulk API). */
interface DaprErrorBody {
  errorCode?: string;
  message?: string;
  failedEntries?: { entryId?: unknown; error?: unknown }[];
  details?: { metadata?: { error?: unknown } }[];
}

/** A publish daprd answered with an error: its code, its reason, and the bulk entries it refused. */
type DaprError = Error & {
  errorCode?: string;
  reason?: string;
  failedEntries?: { entryId: string; error: string }[];
};

const failedEntriesOf = (err: unknown) => (err as DaprError | undefined)?.failedEntries;

/**
 * The error codes with which daprd answers that the component did not publish this message (the broker refused
 * it, or it could not be serialized); other failures (no answer, a missing component, a token) are not about it.
 */
const REFUSALS = new Set([
  'ERR_PUBSUB_PUBLISH_MESSAGE',
  'ERR_PUBSUB_CLOUD_EVENTS_SER',
  'ERR_PUBSUB_EVENTS_SER',
]);

/** daprd's reason for refusing the message of `err`, or undefined when `err` says nothing of the message. */
const refusalOf = (err: unknown): string | undefined => {
  const e = err as DaprError | undefined;
  return e?.errorCode && REFUSALS.has(e.errorCode) ? (e.reason ?? e.message) : undefined;
};

/** What a round came to, by positions in the publish (see publish). */
interface RoundOutcome {
  written: number[];
  /** Not written, in daprd's words. */
  refused: Map<number, string>;
  /** A failure that says nothing of what it wrote: nothing goes after it. */
  failure?: unknown;
}
