#!/usr/bin/env -S node --v8-pool-size=1 --max-semi-space-size=32
// Runs the compiled CLI (dist/). In a checkout (src/ present) it first rebuilds dist/ when a source file changed
// (scripts/build.mjs: esbuild, about 0.3 s, skipped in a few ms when current), so what runs is always what is
// there, without a TypeScript loader at run time. The container image ships only dist/.
import { existsSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

// Node >= 22.1 keeps V8's compiled code of every loaded module on disk: later starts skip most parsing.
module.enableCompileCache?.();

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const main = join(root, 'dist', 'cli', 'main.js');
if (existsSync(join(root, 'src')) && existsSync(join(root, 'scripts', 'build.mjs'))) {
  try {
    const { ensureBuilt } = await import(pathToFileURL(join(root, 'scripts', 'build.mjs')).href);
    await ensureBuilt({ log: (line) => process.stderr.write(`taskflow: ${line}\n`) });
  } catch (err) {
    // A read-only checkout, or one installed without dev dependencies (no esbuild): run the build there is.
    if (!existsSync(main)) {
      process.stderr.write(
        `taskflow: cannot compile src/ to dist/ (${err.message}); run npm install, then npm run build\n`,
      );
      process.exit(1);
    }
    process.stderr.write(
      `taskflow: running the existing dist/, which may be older than src/ (${err.message})\n`,
    );
  }
}
await import(pathToFileURL(main).href);
