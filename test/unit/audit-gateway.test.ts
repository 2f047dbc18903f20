/** Pure parts of the audit trail and the gateway: canonical JSON, diffs, CSV fields, the replay buffer. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GENESIS_HASH, canonicalJson, recordHash } from '../../src/services/audit/chain.ts';
import { diffFields } from '../../src/services/audit/records.ts';
import { csvField } from '../../src/services/audit/routes.ts';
import { encodeFrame, ReplayBuffer } from '../../src/services/gateway/replay-buffer.ts';

describe('audit helpers', () => {
  it('canonical JSON sorts keys at every level and is stable across key order', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } }),
      '{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}',
    );
    assert.equal(canonicalJson({ a: 1, b: 2 }), canonicalJson({ b: 2, a: 1 }));
    assert.equal(canonicalJson({ a: undefined, b: 'é"' }), '{"b":"é\\""}');
  });

  it('hashes chain: a change anywhere changes the hash', () => {
    const rec = {
      seq: 1,
      event_id: 'e1',
      user_id: 'u',
      task_id: 't',
      operation: 'task.created',
      occurred_at: '2026-01-01T00:00:00.000Z',
      recorded_at: '2026-01-01T00:00:00.000Z',
      change: { before: null, after: { title: 'x' } },
      trace_id: null,
      client_ip: null,
      user_agent: null,
    };
    const h = recordHash(GENESIS_HASH, rec);
    assert.match(h, /^[0-9a-f]{64}$/);
    assert.notEqual(recordHash(GENESIS_HASH, { ...rec, change: { before: null, after: { title: 'y' } } }), h);
    assert.notEqual(recordHash('1'.repeat(64), rec), h);
  });

  it('diffs only changed fields, ignoring updated_at and version', () => {
    assert.deepEqual(
      diffFields(
        { title: 'a', tags: ['x'], version: 1, updated_at: '1', status: 'pending' },
        { title: 'b', tags: ['x'], version: 2, updated_at: '2', status: 'pending' },
      ),
      { before: { title: 'a' }, after: { title: 'b' } },
    );
  });

  it('escapes CSV fields and neutralises formulas', () => {
    assert.equal(csvField('plain'), 'plain');
    assert.equal(csvField('a,b'), '"a,b"');
    assert.equal(csvField('say "hi"'), '"say ""hi"""');
    assert.equal(csvField('=HYPERLINK("x")'), `"'=HYPERLINK(""x"")"`);
    // Split at the `;` by a spreadsheet whose list separator is `;`, the rest would be a formula cell.
    assert.equal(csvField('x;=1+1'), '"x;=1+1"');
    assert.equal(csvField(null), '');
    assert.equal(csvField({ a: 1 }), '"{""a"":1}"');
  });
});

/** A frame as the hub hands it to the buffer. */
const asFrame = encodeFrame;

describe('gateway replay buffer', () => {
  const fill = (b: ReplayBuffer, user: string, from: number, to: number) => {
    for (let s = from; s <= to; s++) b.add(user, s, asFrame(`f${s}`));
  };

  it('replays what follows `since`, resyncs when it does not reach back', () => {
    const b = new ReplayBuffer(10, 1_000_000);
    fill(b, 'u', 1, 25);
    assert.equal(b.latest('u'), 25);
    const plan = b.plan('u', 20);
    assert.equal(plan.kind, 'replay');
    assert.deepEqual(plan.kind === 'replay' && plan.frames.map((f) => f.seq), [21, 22, 23, 24, 25]);
    assert.deepEqual(b.plan('u', 15), {
      kind: 'replay',
      frames: [16, 17, 18, 19, 20, 21, 22, 23, 24, 25].map((s) => ({ seq: s, frame: asFrame(`f${s}`) })),
      latest: 25,
    });
    assert.deepEqual(b.plan('u', 14), { kind: 'resync', latest: 25 });
    assert.deepEqual(b.plan('u', 25), { kind: 'replay', frames: [], latest: 25 });
    // A client ahead of the stream (its state is from another one): resync, not silence until 30 is passed.
    assert.deepEqual(b.plan('u', 30), { kind: 'resync', latest: 25 });
    assert.deepEqual(b.plan('nobody', 3), { kind: 'resync', latest: null });
    // Nothing held of the user, the stream's head as committed given: a client at it missed nothing.
    assert.deepEqual(b.plan('nobody', 3, 3), { kind: 'replay', frames: [], latest: 3 });
    assert.deepEqual(b.plan('nobody', 2, 3), { kind: 'resync', latest: 3 });
    assert.deepEqual(b.plan('nobody', 4, 3), { kind: 'resync', latest: 3 });
    assert.deepEqual(
      b.plan('u', 14, 25),
      { kind: 'resync', latest: 25 },
      'the buffer, when it holds the user',
    );
    // Past what the buffer holds but not past the stream's head: this instance is behind, not the client,
    // which keeps its own sequence (what it lacks comes live); past the head too, it resyncs to the head.
    assert.deepEqual(b.plan('u', 30, 30), { kind: 'replay', frames: [], latest: 30 });
    assert.deepEqual(b.plan('u', 28, 30), { kind: 'replay', frames: [], latest: 28 });
    assert.deepEqual(b.plan('u', 31, 30), { kind: 'resync', latest: 30 });
    assert.equal(b.needsHead('u', 25), false);
    assert.equal(b.needsHead('u', undefined), false);
    assert.equal(b.needsHead('u', 26), true);
    assert.equal(b.needsHead('nobody', undefined), true);
  });

  it('ignores duplicates and restarts after a gap', () => {
    const b = new ReplayBuffer(100, 1_000_000);
    fill(b, 'u', 1, 5);
    assert.equal(b.add('u', 3, asFrame('dup')), false);
    assert.equal(b.add('u', 9, asFrame('f9')), true); // 6..8 never seen here
    assert.deepEqual(b.plan('u', 5), { kind: 'resync', latest: 9 });
    assert.equal(b.plan('u', 8).kind, 'replay');
  });

  // GATEWAY_REPLAY_MAX_BYTES bounds what the buffer holds on to: no frame dropped by the per-user limit stays
  // referenced, and a frame counts its bytes as sent (UTF-8), not its UTF-16 length. Measured through
  // `retained` (what its structures reference), not the heap: deterministic on a loaded machine.
  for (const wide of [false, true])
    it(`holds at most GATEWAY_REPLAY_MAX_BYTES of frames (${wide ? 'Chinese titles' : 'ASCII'})`, () => {
      const PER_USER = 500; // the default
      const USERS = 16;
      const UNITS = 1_000; // code units of a frame
      const BUDGET = USERS * PER_USER * UNITS; // every user's 500 latest fit, counted in code units
      const frameOf = (u: number, s: number) => {
        const head = `{"u":${u},"s":${s},"title":"`;
        return asFrame(head + (wide ? '买' : 'g').repeat(UNITS - head.length));
      };
      const b = new ReplayBuffer(PER_USER, BUDGET);
      for (let s = 1; s <= 1_000; s++) for (let u = 0; u < USERS; u++) b.add(`user-${u}`, s, frameOf(u, s));
      const held = b.retained();
      assert.ok(b.totalBytes <= BUDGET, `totalBytes ${b.totalBytes}`);
      assert.ok(
        held.bytes <= BUDGET,
        `holds ${(held.bytes / BUDGET).toFixed(2)}x its byte budget (${held.frames} frames)`,
      );
      assert.equal(held.bytes, b.totalBytes, 'what it counts is what it holds');
      assert.ok(held.frames <= USERS * PER_USER, `${held.frames} frames held`);
      assert.equal(b.latest('user-15'), 1_000);
    });

  it('stays within its byte budget, trimming the least recently updated users first', () => {
    const b = new ReplayBuffer(1000, 100);
    fill(b, 'old', 1, 10); // 10 x 2-3 bytes
    for (let s = 1; s <= 40; s++) b.add('new', s, asFrame('x'.repeat(5)));
    assert.ok(b.totalBytes <= 100, String(b.totalBytes));
    assert.equal(b.latest('old'), null);
    assert.equal(b.latest('new'), 40);
  });
});
