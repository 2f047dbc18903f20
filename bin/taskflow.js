#!/usr/bin/env node
// In a checkout (src/ present) the TypeScript sources run through tsx, so what runs is always what is there;
// the container image ships only dist/ (or set TASKFLOW_DIST=1 to run a local build).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'src', 'cli', 'main.ts');
const compiled = join(root, 'dist', 'cli', 'main.js');
if (existsSync(source) && process.env.TASKFLOW_DIST !== '1') {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(source).href);
} else {
  await import(pathToFileURL(compiled).href);
}
