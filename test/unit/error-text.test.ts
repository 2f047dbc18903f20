/** Errors as logs write them: a client's give-up message with the cause that says why. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorWithCause } from '../../src/error-text.ts';

describe('errorWithCause', () => {
  it('adds the innermost cause, through causes and an aggregate, once', () => {
    const refused = new Error('connect ECONNREFUSED 127.0.0.1:1');
    // As @platformatic/kafka gives up: an aggregate of the attempts' errors.
    const gaveUp = new AggregateError([refused], 'metadata failed 3 times.');
    assert.equal(errorWithCause(gaveUp), 'metadata failed 3 times.: connect ECONNREFUSED 127.0.0.1:1');
    const wrapped = new Error('relay round failed', { cause: gaveUp });
    assert.equal(errorWithCause(wrapped), 'relay round failed: connect ECONNREFUSED 127.0.0.1:1');
    // A message that already ends with its cause's is not repeated.
    const said = new Error(`Kafka publish failed: ${refused.message}`, { cause: refused });
    assert.equal(errorWithCause(said), 'Kafka publish failed: connect ECONNREFUSED 127.0.0.1:1');
    assert.equal(errorWithCause(new Error('plain')), 'plain');
    assert.equal(errorWithCause('a string'), 'a string');
  });
});
