/**
 * The verifier remembers a checked token until its `exp`, never past it: an expired token is refused even
 * when it was accepted (and cached) before; a verifier with another secret does not share the memory.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { SignJWT } from 'jose';
import { AuthError, createVerifier } from '../../src/auth.ts';

const SECRET = 'unit-secret-unit-secret-unit-secret-0123';
const sign = (secret: string, expSeconds: number) =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('ann')
    .setExpirationTime(Math.floor(Date.now() / 1000) + expSeconds)
    .sign(new TextEncoder().encode(secret));

it('accepts a cached token until its exp, and refuses it after', async () => {
  const verify = createVerifier({ secret: SECRET });
  const token = await sign(SECRET, 1);
  assert.deepEqual(await verify(token), { userId: 'ann' });
  assert.deepEqual(await verify(token), { userId: 'ann' }, 'from the cache');
  const expired = Date.parse(new Date(Math.ceil(Date.now() / 1000) * 1000 + 1000).toISOString());
  await new Promise((r) => setTimeout(r, Math.max(0, expired - Date.now() + 50)));
  await assert.rejects(
    verify(token),
    (err: unknown) => err instanceof AuthError && /expired/.test(err.message),
  );
});

it('does not accept for one secret a token checked for another', async () => {
  const token = await sign(SECRET, 60);
  assert.deepEqual(await createVerifier({ secret: SECRET })(token), { userId: 'ann' });
  await assert.rejects(createVerifier({ secret: `${SECRET}-other` })(token), /signature/);
});
