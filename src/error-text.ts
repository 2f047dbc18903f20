/** How errors are written into logs, problem details and failure headers. */

/** The error's message (or the thrown value as text). */
export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** `Name: message`, for failure records where the kind of error matters (dead-letter headers, spans). */
export const errorText = (err: unknown): string =>
  err instanceof Error ? `${err.name}: ${err.message}` : String(err);

/** `err`, or the first of its causes (through `cause`), that is a `type`; undefined when none is. */
export function causeOf<T extends Error>(err: unknown, type: new (...args: never[]) => T): T | undefined {
  for (let e = err, depth = 0; e && depth <= 10; e = (e as { cause?: unknown }).cause, depth++)
    if (e instanceof type) return e;
  return undefined;
}

/**
 * The error's message and, when different, its innermost cause's (through `cause` and an aggregate's
 * `errors`): a client that gives up after retries says "metadata failed 3 times.", the cause says why.
 */
export function errorWithCause(err: unknown): string {
  const innermost = (e: unknown, depth: number): string | null => {
    if (!e || typeof e !== 'object' || depth > 10) return null;
    const x = e as { message?: unknown; errors?: unknown; cause?: unknown };
    for (const inner of [...(Array.isArray(x.errors) ? x.errors : []), x.cause]) {
      const found = innermost(inner, depth + 1);
      if (found) return found;
    }
    return typeof x.message === 'string' ? x.message : null;
  };
  const outer = errorMessage(err);
  const inner = innermost(err, 0);
  return inner && inner !== outer && !outer.endsWith(inner) ? `${outer}: ${inner}` : outer;
}

/**
 * `text` as a record header may carry it anywhere: at most `max` UTF-16 units, cut between characters, with
 * no NUL and no lone surrogate. The embedded log keeps headers as `jsonb`, which refuses both: a dead letter
 * whose error quoted one, or was cut through an emoji, was refused on every try and held its partition.
 */
export function headerText(text: string, max: number): string {
  let out = text.length > max ? text.slice(0, max) : text;
  if (out.length === max && /[\uD800-\uDBFF]$/.test(out)) out = out.slice(0, -1);
  return UNSAFE_IN_HEADER.test(out) ? out.replace(UNSAFE_IN_HEADER_ALL, '\uFFFD') : out;
}

/** A NUL, or a surrogate that is not half of a pair. */
const UNSAFE = '\\u0000|[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]';
const UNSAFE_IN_HEADER = new RegExp(UNSAFE);
const UNSAFE_IN_HEADER_ALL = new RegExp(UNSAFE, 'g');
