/**
 * Text both databases store exactly: PostgreSQL refuses NUL in text (and PGlite fails on it), and an unpaired
 * UTF-16 surrogate has no UTF-8 form. Checked at the edge so such input is a 400 naming the field.
 */
const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const UNPAIRED_SURROGATES = new RegExp(UNPAIRED_SURROGATE.source, 'g');

/**
 * `s` with what `textProblem` refuses replaced by U+FFFD: for text no one can be asked to send again (what a
 * language model answered, after its tool calls ran).
 */
export const storableText = (s: string): string =>
  s.replaceAll('\u0000', '\uFFFD').replace(UNPAIRED_SURROGATES, '\uFFFD');

/** Why `s` cannot be stored as text, or null when it can. */
export function textProblem(s: string): string | null {
  if (s.includes('\u0000')) return 'must not contain NUL characters (U+0000)';
  if (UNPAIRED_SURROGATE.test(s)) return 'must be valid Unicode (it has an unpaired UTF-16 surrogate)';
  return null;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string) => UUID_RE.test(s);

/**
 * What String.prototype.trim removes, as the body of a regular-expression class, spelled out: ECMAScript's \s
 * and Python's (schemathesis checks the OpenAPI patterns) differ.
 */
export const TRIMMED_SPACE =
  '\\t\\n\\u000b\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff';

/** A regular-expression source: `item` once or more, joined by commas. */
export const commaList = (item: string): string => `${item}(?:,${item})*`;

/** The first `max` code points of `s`: never half of a surrogate pair (an emoji cut in two). */
export function firstCodePoints(s: string, max: number): string {
  let out = '';
  let n = 0;
  for (const c of s) {
    if (n++ === max) break;
    out += c;
  }
  return out;
}

/** Length in Unicode code points, as JSON Schema's minLength and maxLength count (an emoji is one, not two). */
export function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}
