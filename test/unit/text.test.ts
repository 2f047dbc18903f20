/**
 * The input checks shared by every edge (pure): text both databases store exactly, UUIDs, time zones.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { firstCodePoints, isUuid, textProblem } from '../../src/domain/text.ts';
import { isTimeZone } from '../../src/domain/time.ts';

describe('textProblem', () => {
  it('accepts any text without NUL whose surrogates are paired, emoji and other scripts included', () => {
    for (const s of ['', 'plain', 'grüße 日本 😀', '😀😀', 'a😀b', '\uD83D\uDE00 at the start'])
      assert.equal(textProblem(s), null, JSON.stringify(s));
  });

  it('names NUL characters', () => {
    for (const s of ['\u0000', 'a\u0000b', 'end\u0000'])
      assert.equal(textProblem(s), 'must not contain NUL characters (U+0000)', JSON.stringify(s));
  });

  it('names an unpaired surrogate, high or low, anywhere', () => {
    const message = 'must be valid Unicode (it has an unpaired UTF-16 surrogate)';
    for (const s of [
      '\uD800', // high, at the end
      'a\uD83Db', // high, followed by an ordinary character
      '\uD83D\uD83D\uDE00', // high, followed by a high (the second one is paired)
      '\uDC00', // low, at the start
      'a\uDE00', // low, after an ordinary character
      '\uD83D\uDE00\uDE00', // low, after a complete pair
    ])
      assert.equal(textProblem(s), message, JSON.stringify(s));
  });
});

describe('firstCodePoints', () => {
  it('cuts at a code point, never inside a surrogate pair, and leaves shorter text whole', () => {
    const title = `a${'😀'.repeat(45)}`; // 91 UTF-16 units: .slice(0, 80) ended in half an emoji
    assert.equal(firstCodePoints(title, 80), title, '46 code points: whole');
    const cut = firstCodePoints(`a${'😀'.repeat(100)}`, 80);
    assert.equal(cut, `a${'😀'.repeat(79)}`);
    assert.equal(textProblem(cut), null);
    assert.equal(firstCodePoints('short', 80), 'short');
    assert.equal(firstCodePoints('', 3), '');
  });
});

describe('isUuid', () => {
  it('accepts the 8-4-4-4-12 hexadecimal form in either case', () => {
    for (const s of ['0190a8d2-3f4b-7c5d-8e6f-0a1b2c3d4e5f', '0190A8D2-3F4B-7C5D-8E6F-0A1B2C3D4E5F'])
      assert.equal(isUuid(s), true, s);
  });

  it('refuses every group of another length or with a character that is not hexadecimal', () => {
    const groups = ['0190a8d2', '3f4b', '7c5d', '8e6f', '0a1b2c3d4e5f'];
    for (let g = 0; g < groups.length; g++) {
      const with_ = (group: string) => groups.map((x, i) => (i === g ? group : x)).join('-');
      assert.equal(isUuid(with_(groups[g]!.slice(1))), false, `group ${g} one short`);
      assert.equal(isUuid(with_(`${groups[g]!}0`)), false, `group ${g} one long`);
      assert.equal(isUuid(with_('g'.repeat(groups[g]!.length))), false, `group ${g} not hexadecimal`);
    }
    for (const s of ['', '0190a8d23f4b7c5d8e6f0a1b2c3d4e5f', ' 0190a8d2-3f4b-7c5d-8e6f-0a1b2c3d4e5f'])
      assert.equal(isUuid(s), false, JSON.stringify(s));
  });
});

describe('isTimeZone', () => {
  it('accepts IANA zone names', () => {
    for (const tz of ['UTC', 'Europe/Berlin', 'America/Argentina/ComodRivadavia'])
      assert.equal(isTimeZone(tz), true, tz);
  });

  it('refuses what is not a zone name, without throwing', () => {
    for (const tz of [undefined, null, 42, {}, '', 'Mars/Olympus', '+01:00', 'x'.repeat(65)])
      assert.equal(isTimeZone(tz), false, JSON.stringify(tz));
  });
});
