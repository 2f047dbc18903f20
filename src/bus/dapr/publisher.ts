/**
 * Publishing through the sidecar: structured CloudEvents, key = `partitionKey`, in rounds of distinct keys
 * through the bulk publish API, or one by one when the sidecar has none.
 */
import type { Logger } from '../../observability/logger.ts';
import { eachLimited } from '../../each-limited.ts';
import { type OutgoingMessage, type Publisher } from '../types.ts';
import { errorText } from '../../error-text.ts';
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
   * one key and the next round starts only after the whole round is acknowledged. One key's messages thus
   * stay in order whatever daprd's (non-idempotent) Kafka producer does inside a request, and the first
   * failure stops everything after it (the caller retries the batch; consumers are idempotent).
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    if (this.closed) throw new Error('Dapr publisher is closed');
    const rounds: OutgoingMessage[][] = [];
    const seen = new Map<string, number>();
    for (const m of messages) {
      const n = seen.get(m.key) ?? 0;
      seen.set(m.key, n + 1);
      (rounds[n] ??= []).push(m);
    }
    for (const round of rounds) await this.publishRound(round);
  }

  private async publishRound(round: OutgoingMessage[]): Promise<void> {
    // A single message is cheaper through /v1.0/publish than through a one-entry bulk request.
    if (this.bulk && round.length > 1) {
      const byTopic = new Map<string, OutgoingMessage[]>();
      for (const m of round) {
        const list = byTopic.get(m.topic);
        if (list) list.push(m);
        else byTopic.set(m.topic, [m]);
      }
      const chunks = [...byTopic.entries()].flatMap(([topic, list]) =>
        bulkChunks(list).map((entries) => [topic, entries] as const),
      );
      const results = await Promise.allSettled(
        chunks.map(([topic, entries]) => this.publishBulk(topic, entries)),
      );
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      if (this.bulk) return;
      // the sidecar has no bulk API: fall through and send this round one by one
    }
    await eachLimited(round, this.s.publishConcurrency ?? 4, (m) => this.publishOne(m));
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

  private async failure(res: Response, what: string): Promise<Error & { errorCode?: string }> {
    const text = await res.text().catch(() => '');
    let detail = text.slice(0, 500);
    let errorCode: string | undefined;
    try {
      const body = JSON.parse(text) as { errorCode?: string; message?: string };
      errorCode = body.errorCode;
      if (body.errorCode || body.message) detail = `${body.errorCode ?? ''} ${body.message ?? ''}`.trim();
    } catch {
      /* not JSON */
    }
    const err: Error & { errorCode?: string } = new Error(
      `Dapr publish to ${this.s.pubsubName}/${what} failed: HTTP ${res.status}${detail ? ` ${detail}` : ''}${res.status === 401 ? ' (the sidecar wants an API token: set DAPR_API_TOKEN)' : ''}`,
    );
    if (errorCode) err.errorCode = errorCode;
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

  /** Serialized entries (bulkEntry) of one topic and distinct keys in one request (bulk publish API, alpha in 1.16). */
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
      this.log?.warn({ err: err.message }, 'daprd has no bulk publish API; publishing one message at a time');
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
 * per-entry traceparent there.
 */
const bulkEntry = (m: OutgoingMessage, i: number): string =>
  JSON.stringify({
    entryId: String(i),
    event: m.event.traceparent ? { ...m.event, traceid: m.event.traceparent } : m.event,
    contentType: 'application/cloudevents+json',
    metadata: { ...(m.headers ?? {}), partitionKey: m.key },
  });

/**
 * A topic's messages of one round as the entries of bulk requests, each at most MAX_BULK entries and
 * `maxBytes` (an entry id is its place in the round: unique within any request).
 */
export function bulkChunks(list: readonly OutgoingMessage[], maxBytes = MAX_BULK_BYTES): string[][] {
  const chunks: string[][] = [];
  let chunk: string[] = [];
  let bytes = 0;
  for (const [i, m] of list.entries()) {
    const entry = bulkEntry(m, i);
    const size = Buffer.byteLength(entry) + 1;
    if (chunk.length > 0 && (chunk.length === MAX_BULK || bytes + size > maxBytes)) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(entry);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}
