import assert from 'node:assert/strict';
import { it } from 'node:test';
import { nestingDepth } from '../../src/http/server.ts';

it('nestingDepth counts arrays and objects outside strings, escapes included', () => {
  assert.equal(nestingDepth('{"a":[1,{"b":[]}]}'), 4);
  assert.equal(nestingDepth('{"a":"[[[[{{{{"}'), 1);
  assert.equal(nestingDepth('{"a":"\\"[[[[","b":[]}'), 2);
  assert.equal(nestingDepth('"just a string"'), 0);
  assert.equal(nestingDepth('['.repeat(100), 10), 11, 'stops once past the bound');
});
