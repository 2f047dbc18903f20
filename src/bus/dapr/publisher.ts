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
      const chunks = [...byTopic.entries()].flatMap(([topic, list]) => {
        const out: [string, OutgoingMessage[]][] = [];
        for (let i = 0; i < list.length; i += MAX_BULK) out.push([topic, list.slice(i, i + MAX_BULK)]);
        return out;
      });
      const results = await Promise.allSettled(chunks.map(([topic, list]) => this.publishBulk(topic, list)));
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

  /**
   * Messages of one topic and distinct keys in one request (Dapr's bulk publish API, alpha in 1.16). Each
   * entry carries `traceid` = its traceparent: the only way daprd keeps a per-entry traceparent there.
   */
  private async publishBulk(topic: string, list: OutgoingMessage[]): Promise<void> {
    const entries = list.map((m, i) => ({
      entryId: String(i),
      event: m.event.traceparent ? { ...m.event, traceid: m.event.traceparent } : m.event,
      contentType: 'application/cloudevents+json',
      metadata: { ...(m.headers ?? {}), partitionKey: m.key },
    }));
    const url = `${this.base}/v1.0-alpha1/publish/bulk/${encodeURIComponent(
      this.s.pubsubName,
    )}/${encodeURIComponent(topic)}`;
    const res = await this.post(url, topic, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(entries),
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
