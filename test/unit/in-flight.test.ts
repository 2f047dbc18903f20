/** Admission by the requests in flight: refused only once `max` have stood in flight for the window. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InFlightLimit } from '../../src/http/in-flight.ts';

describe('InFlightLimit', () => {
  it('admits a burst above the limit while it is younger than the window', () => {
    const limit = new InFlightLimit(2, 50);
    for (let i = 0; i < 5; i++) {
      assert.ok(limit.admits(10), `request ${i} of a burst at t=10`);
      limit.enter(10);
    }
    assert.equal(limit.count, 5);
    assert.ok(limit.admits(60), 'at the limit for 50 ms: not yet standing');
    assert.ok(!limit.admits(61), 'standing for more than 50 ms: refused');
  });

  it('times the window from when the limit was reached, not from the first request', () => {
    const limit = new InFlightLimit(2, 50);
    limit.enter(0);
    limit.enter(100); // reached at t=100
    assert.ok(limit.admits(140));
    assert.ok(!limit.admits(151));
  });

  it('stands while the count stays at or above the limit, and starts over once it falls below', () => {
    const limit = new InFlightLimit(2, 50);
    limit.enter(0);
    limit.enter(0);
    limit.enter(0); // 3
    limit.leave(); // 2: still at the limit since t=0
    assert.ok(!limit.admits(51));
    limit.leave(); // 1: below
    assert.ok(limit.admits(51));
    limit.enter(60); // 2 again: a new window from t=60
    assert.ok(limit.admits(110));
    assert.ok(!limit.admits(111));
    limit.leave();
    limit.leave();
    assert.equal(limit.count, 0);
    assert.ok(limit.admits(1_000));
  });
});
