/** The rate limit's store of one-minute windows and the client key of an address. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_WINDOWS, SharedMinuteWindows } from '../../src/http/authenticated.ts';
import { clientPrefix } from '../../src/http/peer.ts';

describe('SharedMinuteWindows', () => {
  it('keeps at most MAX_WINDOWS windows, and a key counted all along keeps its count through a flood', () => {
    const store = new SharedMinuteWindows();
    let current = 0;
    for (let i = 0; i < 2.5 * MAX_WINDOWS; i++) {
      store.hit(`ip:flood-${i}`);
      if (i % 10_000 === 0) current = store.hit('user:steady').current;
    }
    assert.ok(store.size <= MAX_WINDOWS, `${store.size} windows kept`);
    assert.equal(
      current,
      Math.floor((2.5 * MAX_WINDOWS - 1) / 10_000) + 1,
      'the steady key was never forgotten',
    );
  });

  it('starts a new window once a minute has passed, with the time left in it', () => {
    const store = new SharedMinuteWindows();
    const realNow = Date.now;
    let now = 1_000_000;
    Date.now = () => now;
    try {
      assert.deepEqual(store.hit('k'), { current: 1, ttl: 60_000 });
      now += 59_999;
      assert.deepEqual(store.hit('k'), { current: 2, ttl: 1 });
      now += 1;
      assert.deepEqual(store.hit('k'), { current: 1, ttl: 60_000 });
    } finally {
      Date.now = realNow;
    }
  });
});

describe('clientPrefix', () => {
  it('is an IPv4 address, or the /64 of an IPv6 one, whatever its written form', () => {
    const cases: [string, string][] = [
      ['192.0.2.1', '192.0.2.1'],
      ['::ffff:192.0.2.1', '192.0.2.1'],
      ['::ffff:c000:201', '192.0.2.1'],
      ['2001:db8:1:2::5', '2001:db8:1:2::/64'],
      ['2001:0DB8:0001:0002:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
      ['2001:db8::', '2001:db8:0:0::/64'],
      ['fe80::1%eth0', 'fe80:0:0:0::/64'],
      ['::1', '0:0:0:0::/64'],
      // NAT64 (64:ff9b::/96): each IPv4 client behind the translator is its own (they shared one /64).
      ['64:ff9b::c000:201', '192.0.2.1'],
      ['64:ff9b::198.51.100.7', '198.51.100.7'],
      ['64:ff9b:1::c000:201', '64:ff9b:1:0::/64'],
      ['not an address', 'not an address'],
    ];
    for (const [address, key] of cases) assert.equal(clientPrefix(address), key, address);
  });
});
