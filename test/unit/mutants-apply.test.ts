/**
 * Every guarantee mutant still applies to the code (scripts/mutants reports one that does not as STALE, but
 * only when a full run is made): its search text occurs once in its file, and its test files exist.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { MUTANTS, staleness } from '../../scripts/mutants.list.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('the guarantee mutants', () => {
  it('each applies to the code as it is', () => {
    const stale = MUTANTS.map((m) => [m.id, staleness(m, ROOT)]).filter(([, why]) => why !== undefined);
    assert.deepEqual(stale, []);
  });
});
