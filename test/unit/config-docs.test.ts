/**
 * Every environment variable the code reads is documented, with its default, in the README's configuration
 * table and in `.env.example`; neither lists one the code no longer reads. A new setting without docs, or a
 * renamed one left behind in the docs, fails here.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = new URL('../../', import.meta.url).pathname;

/** Names read in src/: `env.X`, `process.env.X`, `int(env, 'X', ...)`, `port(env, 'X', ...)`, `bool(env, 'X', ...)` and `baseUrl(env, 'X')`. */
function readInSource(): Set<string> {
  const names = new Set<string>();
  const files = readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' }).filter((f) =>
    f.endsWith('.ts'),
  );
  for (const f of files) {
    const text = readFileSync(join(ROOT, 'src', f), 'utf8');
    for (const m of text.matchAll(/\benv\.([A-Z][A-Z0-9_]+)/g)) names.add(m[1]!);
    for (const m of text.matchAll(/\b(?:int|port|bool|baseUrl|\w+Env)\(\s*env,\s*'([A-Z][A-Z0-9_]+)'/g))
      names.add(m[1]!);
  }
  return names;
}

const readmeTable = () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('| variable | default | meaning |'));
  return new Set(
    table
      .slice(0, table.indexOf('\n\n'))
      .split('\n')
      .flatMap((row) => [...(row.split('|')[1] ?? '').matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!)),
  );
};

const envExample = () =>
  new Set(
    [...readFileSync(join(ROOT, '.env.example'), 'utf8').matchAll(/^# ([A-Z][A-Z0-9_]+)=/gm)].map(
      (m) => m[1]!,
    ),
  );

// Read by libraries from the same environment, documented with ours.
const LIBRARY_VARIABLES = [
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_SERVICE_NAME',
  'OTEL_SDK_DISABLED',
];

describe('configuration docs', () => {
  const code = readInSource();

  it('finds the variables the code reads (the scan is not empty)', () => {
    for (const known of ['DATABASE_URL', 'BUS', 'JWT_SECRET', 'RELAY_BATCH_SIZE', 'LOG_FORMAT'])
      assert.ok(code.has(known), known);
  });

  for (const [doc, names] of [
    ['README.md configuration table', readmeTable()],
    ['.env.example', envExample()],
  ] as const) {
    it(`${doc} lists every variable the code reads, and no other`, () => {
      assert.deepEqual([...code].filter((n) => !names.has(n)).sort(), [], `read but not in ${doc}`);
      const documented = [...names].filter((n) => !code.has(n) && !LIBRARY_VARIABLES.includes(n));
      assert.deepEqual(documented.sort(), [], `in ${doc} but not read by src/`);
    });
  }
});
