/**
 * OpenTelemetry tracing (docs/architecture.md section 7). One trace follows a change from the API request through the
 * outbox (the event's `traceparent` is the request span), the relay (a PRODUCER span per event, whose context
 * travels as the `traceparent` transport header: Kafka header / embedded log `headers`), each consumer's
 * handler (a CONSUMER span, child of that header) and into the events a handler produces
 * (`currentTraceparent()`, or `childTraceparent()` of trace.ts, which prefers the active span).
 *
 * Optional and cheap: without `initTracing` (no OTEL_EXPORTER_OTLP_ENDPOINT) the global tracer is the API's
 * no-op, `tracingEnabled()` is false and the call sites skip span work; the SDK packages are only imported
 * when tracing is switched on. Tests switch it on with an in-memory exporter.
 */
import {
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  isSpanContextValid,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
} from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace-node';
import { errorMessage } from '../error-text.ts';

export { SpanKind, SpanStatusCode };

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const TRACER_NAME = 'taskflow';

let enabled = false;
let shutdownHook: (() => Promise<void>) | undefined;

/** True once `initTracing` registered a provider: only then do the call sites create spans. */
export const tracingEnabled = () => enabled;

export const tracer = () => trace.getTracer(TRACER_NAME);

/** The span context a W3C `traceparent` names (remote), or undefined when absent or malformed. */
export function spanContextOf(traceparent: string | undefined | null): SpanContext | undefined {
  if (typeof traceparent !== 'string') return undefined;
  const m = TRACEPARENT.exec(traceparent.trim());
  if (!m) return undefined;
  const sc: SpanContext = {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: Number.parseInt(m[3]!, 16),
    isRemote: true,
  };
  return isSpanContextValid(sc) ? sc : undefined;
}

export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** A context whose parent is the span a `traceparent` names (the root context when there is none). */
export function contextFromTraceparent(traceparent: string | undefined | null): Context {
  const sc = spanContextOf(traceparent);
  return sc ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT;
}

/** The W3C `traceparent` of a span, or undefined for an invalid (no-op) one. */
export function traceparentOf(span: Span | undefined): string | undefined {
  const sc = span?.spanContext();
  return sc && isSpanContextValid(sc) ? formatTraceparent(sc) : undefined;
}

/**
 * The `traceparent` of the active span (an HTTP request, an MCP tool call, a consumer handler), for the
 * events the current operation produces; undefined when no span is active (tracing off).
 */
export function currentTraceparent(): string | undefined {
  return traceparentOf(trace.getActiveSpan());
}

/** Adds an event to the active span (a retry of a consumer handler, say); nothing when none is active. */
export function addSpanEvent(name: string, attributes: Attributes): void {
  trace.getActiveSpan()?.addEvent(name, attributes);
}

export interface SpanOptions {
  kind?: SpanKind;
  /** Parent: a `traceparent` string or a context; default the active context. */
  parent?: string | Context | undefined;
  attributes?: Attributes;
  /** Other traceparents to link (e.g. the event's own when the parent is the transport header). */
  links?: (string | undefined)[];
}

function parentContext(parent: SpanOptions['parent']): Context {
  if (parent === undefined) return context.active();
  if (typeof parent === 'string') return contextFromTraceparent(parent);
  return parent;
}

function toLinks(links: SpanOptions['links']): Link[] {
  const out: Link[] = [];
  for (const l of links ?? []) {
    const sc = spanContextOf(l);
    if (sc) out.push({ context: sc });
  }
  return out;
}

export function recordError(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : new Error(String(err)));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: errorMessage(err),
  });
}

/**
 * Runs `fn` in a new active span (ended when `fn` settles; a throw marks it as an error). With tracing off
 * this is a plain call of `fn` with a no-op span.
 */
export async function withSpan<T>(
  name: string,
  opts: SpanOptions,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  if (!enabled) return fn(trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
  const parent = parentContext(opts.parent);
  const span = tracer().startSpan(
    name,
    {
      ...(opts.kind !== undefined ? { kind: opts.kind } : {}),
      ...(opts.attributes ? { attributes: opts.attributes } : {}),
      links: toLinks(opts.links),
    },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    recordError(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** Starts a span that the caller ends (spans that outlive one callback: HTTP requests, publish batches). */
export function startSpan(name: string, opts: SpanOptions = {}): Span | undefined {
  if (!enabled) return undefined;
  return tracer().startSpan(
    name,
    {
      ...(opts.kind !== undefined ? { kind: opts.kind } : {}),
      ...(opts.attributes ? { attributes: opts.attributes } : {}),
      links: toLinks(opts.links),
    },
    parentContext(opts.parent),
  );
}

/** Runs `fn` with `span` active (a callback-style API such as a Fastify hook's `done`). */
export function runWithSpan<T>(span: Span | undefined, fn: () => T): T {
  if (!span) return fn();
  return context.with(trace.setSpan(context.active(), span), fn);
}

export interface TracingOptions {
  serviceName: string;
  /** An exporter to use instead of OTLP (tests: InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Export each span when it ends (tests) instead of in batches. */
  simple?: boolean;
  env?: NodeJS.ProcessEnv;
}

/**
 * Registers a global tracer provider (AsyncLocalStorage context, W3C propagation) exporting over OTLP/HTTP to
 * OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or to `opts.exporter`. Returns false,
 * doing nothing, when neither is given. Idempotent.
 */
export async function initTracing(opts: TracingOptions): Promise<boolean> {
  if (enabled) return true;
  const env = opts.env ?? process.env;
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!opts.exporter && !endpoint) return false;
  if (env.OTEL_SDK_DISABLED === 'true') return false;
  const sdk = await import('@opentelemetry/sdk-trace-node');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  let exporter = opts.exporter;
  if (!exporter) {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    exporter = new OTLPTraceExporter(); // reads the OTEL_EXPORTER_OTLP_* variables itself
  }
  const processor = opts.simple
    ? new sdk.SimpleSpanProcessor(exporter)
    : new sdk.BatchSpanProcessor(exporter);
  const provider = new sdk.NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || opts.serviceName }),
    spanProcessors: [processor],
  });
  provider.register();
  enabled = true;
  shutdownHook = async () => {
    await provider.shutdown().catch(() => undefined);
    trace.disable();
    context.disable();
    enabled = false;
  };
  return true;
}

/** Flushes and stops the provider (process shutdown). */
export async function shutdownTracing(): Promise<void> {
  const hook = shutdownHook;
  shutdownHook = undefined;
  await hook?.();
}
