/** Errors as logs write them: a client's give-up message with the cause that says why. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorWithCause, headerText } from '../../src/error-text.ts';

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

it('headerText: bounded, cut between characters, no NUL or lone surrogate', () => {
  assert.equal(headerText('plain', 3), 'pla');
  assert.equal(headerText('xxx😀', 4), 'xxx', 'an emoji at the bound is left out whole');
  assert.equal(headerText('😀ok', 10), '😀ok');
  assert.equal(headerText('a\u0000b', 10), 'a\uFFFDb');
  assert.equal(headerText('\uDC00ok\uD800', 10), '\uFFFDok\uFFFD');
  const text = 'nothing to change';
  assert.equal(headerText(text, 100), text);
});
