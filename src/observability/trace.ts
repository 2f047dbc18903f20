/** W3C trace context helpers: every request and event carries a `traceparent` (00-<trace>-<span>-<flags>). */
import { randomFillSync } from 'node:crypto';
import { currentTraceparent } from './tracing.ts';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function isTraceparent(v: unknown): v is string {
  return typeof v === 'string' && TRACEPARENT.test(v) && !/^00-0{32}-/.test(v) && !/-0{16}-/.test(v);
}

/**
 * The `traceparent` for what the current operation produces (an event, a downstream call). With tracing on
 * (tracing.ts) that is the active OpenTelemetry span (the HTTP request, MCP tool call or consumer handler),
 * so the producing span is the parent of whatever handles the event; otherwise it continues the caller's
 * trace with a new span id, or starts a new trace.
 */
export function childTraceparent(parent?: string): string {
  const current = currentTraceparent();
  if (current && (!isTraceparent(parent) || traceIdOf(parent) === traceIdOf(current))) return current;
  const span = randomHex(8);
  if (isTraceparent(parent)) {
    const [, trace, , flags] = TRACEPARENT.exec(parent)!;
    return `00-${trace}-${span}-${flags}`;
  }
  return `00-${randomHex(16)}-${span}-01`;
}

/**
 * Random ids from a pool filled 4 KiB at a time: one `randomBytes` call per id was a system call per
 * event (about 0.1 ms of CPU per write across the pipeline, docs/benchmarks.md). As crypto.randomUUID does.
 */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += bytes;
  return pool.toString('hex', poolAt - bytes, poolAt);
}

export const traceIdOf = (traceparent?: string) =>
  isTraceparent(traceparent) ? traceparent.slice(3, 35) : undefined;
