/**
 * The OpenAPI document against the running system, checked by schemathesis (a property-based API tester from
 * PyPI; scripts/test installs it in .cache/venv and sets SCHEMATHESIS): every target of `taskflow` on a
 * fresh PGlite directory, requests generated from `/openapi.json` (examples, coverage, fuzzing and stateful
 * phases), each answer checked: no server error; every status code, content type and header the document
 * declares; response bodies of their schema; 405 with Allow for methods a path does not take; auth required
 * where declared.
 *
 * Every check runs. The document states every rule a request must keep (patterns for RRULEs, durations,
 * instants, e-mail and URLs; enums; bounds), so no request it allows is refused and none it forbids is
 * accepted. What no JSON Schema can state, an opaque list cursor, is left to test/schemathesis/hooks.py;
 * links between operations are the document's own (test/schemathesis/schemathesis.toml says why).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { signDevToken } from '../../src/auth.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { startServer, stopChild } from '../helpers/processes.ts';
import { TARGETS } from '../../src/services/index.ts';
import { startFakeModel } from '../helpers/openai-server.ts';

const st = process.env.SCHEMATHESIS ?? join(process.cwd(), '.cache/venv/bin/st');
const available = existsSync(st);
if (!available && process.env.REQUIRE_SCHEMATHESIS === '1')
  throw new Error(`REQUIRE_SCHEMATHESIS=1 but ${st} does not exist (scripts/test installs it)`);
const CONFIG = join(process.cwd(), 'test/schemathesis/schemathesis.toml');
const HOOKS = join(process.cwd(), 'test/schemathesis/hooks.py');
const EVERY_TARGET = TARGETS.map((t) => t.name); // as `taskflow up`

describe('the OpenAPI document, checked by schemathesis', { skip: !available && `needs ${st}` }, () => {
  it('finds no server error and no answer the document does not declare', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-st-'));
    // The chat endpoint talks to a stand-in model that always answers in words.
    const model = await startFakeModel({ fallback: { text: 'Noted.' } });
    const server = await startServer(EVERY_TARGET, {
      CHAT_BASE_URL: model.url,
      CHAT_MODEL: 'fake-model',
      DATABASE_URL: join(dir, 'db'),
      BUS: 'embedded',
      JWT_SECRET: TEST_SECRET,
      RATE_LIMIT_PER_MINUTE: '0',
      // Admission control answers 503 while the loop lags, which schemathesis counts as a server error; on a
      // loaded CI host its thousands of requests can make the loop lag. What it checks here is the document.
      MAX_EVENT_LOOP_DELAY_MS: '0',
      CREATE_QUEUE_MAX_MS: '0',
      LOG_LEVEL: 'warn',
    });
    try {
      const token = await signDevToken(TEST_SECRET, 'schemathesis');
      const seed = process.env.SCHEMATHESIS_SEED ?? '20261203';
      const args = [
        '--config-file',
        CONFIG,
        'run',
        `${server.url}/openapi.json`,
        '--checks',
        'all',
        '--max-examples',
        process.env.SCHEMATHESIS_MAX_EXAMPLES ?? '30',
        '--seed',
        seed,
        '-H',
        `Authorization: Bearer ${token}`,
      ];
      // Its cache (.schemathesis/) goes to the scratch directory, not the checkout.
      const child = spawn(st, args, {
        cwd: dir,
        env: { ...process.env, NO_COLOR: '1', SCHEMATHESIS_HOOKS: HOOKS },
      });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (out += b.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      const summary = out.slice(out.lastIndexOf('SUMMARY'));
      t.diagnostic(
        `schemathesis (seed ${seed}): ${summary
          .split('\n')
          .filter((l) => /generated|passed|failures/.test(l))
          .join('; ')}`,
      );
      const died = server.child.exitCode ?? server.child.signalCode;
      assert.equal(
        died,
        null,
        `the server exited (${died}) during the run:\n${server.output().slice(-8_000)}`,
      );
      assert.equal(code, 0, `schemathesis found failures:\n${out.slice(-8_000)}`);
    } finally {
      await stopChild(server.child);
      await model.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
