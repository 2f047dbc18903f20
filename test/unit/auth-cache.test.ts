/**
 * The verifier remembers a checked token until its `exp`, never past it: an expired token is refused even
 * when it was accepted (and cached) before; a verifier with another secret does not share the memory.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { SignJWT } from 'jose';
import { AuthError, createVerifier } from '../../src/auth.ts';

const SECRET = 'unit-secret-unit-secret-unit-secret-0123';
/** A token that expires at the returned `exp` (seconds), at least `minSeconds` from now. */
const sign = async (secret: string, minSeconds: number) => {
  const exp = Math.ceil(Date.now() / 1000) + minSeconds;
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('ann')
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(secret));
  return { token, exp };
};

it('accepts a cached token until its exp, and refuses it after', async () => {
  const verify = createVerifier({ secret: SECRET });
  // Two seconds of validity at least: a busy machine must not expire it before the first checks (with one,
  // signed at x.95 s, it had 50 ms and failed under load).
  const { token, exp } = await sign(SECRET, 2);
  assert.deepEqual(await verify(token), { userId: 'ann', expiresAt: exp * 1000 });
  assert.deepEqual(await verify(token), { userId: 'ann', expiresAt: exp * 1000 }, 'from the cache');
  await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now() + 50)));
  await assert.rejects(
    verify(token),
    (err: unknown) => err instanceof AuthError && /expired/.test(err.message),
  );
});

it('does not accept for one secret a token checked for another', async () => {
  const { token, exp } = await sign(SECRET, 60);
  assert.deepEqual(await createVerifier({ secret: SECRET })(token), { userId: 'ann', expiresAt: exp * 1000 });
  await assert.rejects(createVerifier({ secret: `${SECRET}-other` })(token), /signature/);
});

it('refuses a subject the database cannot store as a user id: NUL, half a surrogate pair', async () => {
  const verify = createVerifier({ secret: SECRET });
  for (const sub of ['a\u0000b', 'a\ud800b']) {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(sub)
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));
    await assert.rejects(
      verify(token),
      (err: unknown) => err instanceof AuthError && /usable subject/.test(err.message),
    );
  }
});
