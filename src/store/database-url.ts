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
 * `-c TimeZone=UTC`, which wins over a zone named before it (the server applies them in order). Only the query
 * string is read: a URL WHATWG's parser refuses that node-postgres takes (`postgres://u:p@/db?host=/socket`,
 * Cloud SQL's form) kept its options, and lost UTC.
 */
export function withSessionOptions(url: string): { url: string; options: string } {
  const utc = '-c TimeZone=UTC';
  const at = url.indexOf('?');
  if (at < 0) return { url, options: utc };
  const query = new URLSearchParams(url.slice(at + 1));
  const own = query.get('options')?.trim();
  if (!own) return { url, options: utc };
  query.delete('options');
  const rest = query.toString();
  return { url: rest ? `${url.slice(0, at)}?${rest}` : url.slice(0, at), options: `${own} ${utc}` };
}
