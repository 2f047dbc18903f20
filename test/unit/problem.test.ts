/** Problem details: every status the server answers has its title; the overload 503's wording. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { problem } from '../../src/http/problem.ts';
import { behindDetail, quotedString } from '../../src/http/server.ts';

describe('problem details', () => {
  it('titles every status the server answers with, not a generic "Error"', () => {
    // 431: headers over Node's limit; 499: a chat client that went away; 502/504: the language model.
    const titles = Object.fromEntries([431, 499, 502, 503, 504].map((s) => [s, problem(s).title]));
    assert.deepEqual(titles, {
      431: 'Request Header Fields Too Large',
      499: 'Client Closed Request',
      502: 'Bad Gateway',
      503: 'Service Unavailable',
      504: 'Gateway Timeout',
    });
  });

  it('says how far the event loop is behind, in words while a long task holds it over a whole sample', () => {
    assert.equal(
      behindDetail(42.4, 10),
      'the server is behind (event loop delay 42 ms > 10 ms); retry shortly',
    );
    // Just over the bound: a decimal, not "25 ms > 25 ms".
    assert.equal(
      behindDetail(25.4, 25),
      'the server is behind (event loop delay 25.4 ms > 25 ms); retry shortly',
    );
    // under-pressure reports Infinity when no delay was sampled in the interval (the loop was held throughout)
    for (const held of [Infinity, NaN, undefined])
      assert.equal(
        behindDetail(held, 10),
        'the server is behind (event loop delay over a sample > 10 ms); retry shortly',
      );
  });

  it('writes a header parameter as one quoted-string whatever the text', () => {
    assert.equal(quotedString('plain'), '"plain"');
    assert.equal(quotedString('say "hi" \\ bye'), '"say \\"hi\\" \\\\ bye"');
    assert.equal(quotedString('line\r\nbreak\u0000'), '"linebreak"');
  });
});
