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
