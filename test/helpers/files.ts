/** Files for a test: a new temporary folder holding `files` (name -> text); whether another account can read one. */
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export function dirWith(files: Record<string, string>, prefix = 'taskflow-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

/**
 * Whether an account other than the owner's may read `file` (and, with `run`, execute it): its own bits for
 * others, and every folder above it searchable by them. Node from the npm package lives under /root/.npm,
 * which another account cannot reach.
 */
export function othersCanRead(file: string, run = false): boolean {
  const mode = statSync(file).mode;
  if ((mode & 0o004) === 0 || (run && (mode & 0o001) === 0)) return false;
  for (let path = dirname(file); ; path = dirname(path)) {
    if ((statSync(path).mode & 0o001) === 0) return false;
    if (dirname(path) === path) return true;
  }
}
