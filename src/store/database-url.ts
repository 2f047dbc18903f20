/**
 * What DATABASE_URL names, read the same everywhere (configuration, opening, the CLI): PostgreSQL, or PGlite in
 * memory or in a directory. No I/O, nothing loaded: the configuration reads it before any database module.
 */
import { resolve } from 'node:path';

export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//.test(url);
}

/** `memory://` (or empty) for a database in memory, else the directory's absolute path (`file://` taken off). */
export function pgliteLocation(url: string): string {
  return url === 'memory://' || url === '' ? 'memory://' : resolve(url.replace(/^file:\/\//, ''));
}

/**
 * The pool's connection string and startup `options`: the URL's own `options` (node-postgres lets a URL's
 * replace the pool's, which dropped UTC for a URL setting `-c statement_timeout=…`) followed by
 * `-c TimeZone=UTC`, which wins over a zone named before it (the server applies them in order).
 */
export function withSessionOptions(url: string): { url: string; options: string } {
  const utc = '-c TimeZone=UTC';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, options: utc };
  }
  const own = parsed.searchParams.get('options')?.trim();
  if (!own) return { url, options: utc };
  parsed.searchParams.delete('options');
  return { url: parsed.toString(), options: `${own} ${utc}` };
}
