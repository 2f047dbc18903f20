#!/usr/bin/env node
// `npm run test:unit`: every test/unit/**/*.test.ts under Node's test runner, on Node 20, 22 and 24 alike.
// The files are listed here because Node 20 does not expand a glob given to --test (Node 22 does), and a
// shell's `**` needs globstar. Extra arguments go to the runner (e.g. --test-name-pattern=...).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = 'test/unit';
const files = readdirSync(dir, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.ts'))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error(`no test files under ${dir}`);
  process.exit(1);
}
const run = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', ...process.argv.slice(2), ...files],
  { stdio: 'inherit' },
);
if (run.error) throw run.error;
process.exit(run.status ?? 1);
