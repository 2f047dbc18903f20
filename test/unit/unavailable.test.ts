import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isUnavailable } from '../../src/retry.ts';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('isUnavailable', () => {
  it('recognises socket errors, PostgreSQL connection-class states and the pg driver connection errors', () => {
    for (const err of [
      withCode('ECONNREFUSED'),
      withCode('ECONNRESET'),
      withCode('57P01', 'terminating connection due to administrator command'),
      withCode('57P03', 'the database system is starting up'),
      withCode('08006'),
      new Error('Connection terminated unexpectedly'),
      new Error('timeout exceeded when trying to connect'),
      new Error('wrapped', { cause: withCode('ECONNREFUSED') }),
    ])
      assert.equal(isUnavailable(err), true, String(err));
  });

  it("does not take a message's own failures for an outage", () => {
    for (const err of [
      new Error('boom'),
      withCode('23505', 'duplicate key value violates unique constraint'),
      withCode('22P02', 'invalid input syntax'),
      withCode('40001', 'could not serialize access'),
      withCode('08P01', 'bind message has 70000 parameter formats but 0 parameters'),
      'Connection terminated',
      null,
      undefined,
    ])
      assert.equal(isUnavailable(err), false, String(err));
  });
});
