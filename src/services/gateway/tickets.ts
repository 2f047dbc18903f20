/**
 * Short-lived WebSocket tickets (`POST /api/ws-ticket` -> `/ws?ticket=...`) for clients that cannot put the
 * JWT in `Sec-WebSocket-Protocol`. A ticket is an HS256 JWT (audience taskflow-ws, 60 s) signed with a key
 * derived from JWT_SECRET (or GATEWAY_TICKET_SECRET), so any gateway instance accepts it, once: `spend` records
 * its use where every instance sees it (the database; in memory for one instance alone).
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { AuthError, type Principal } from '../../auth.ts';
import type { Clock } from '../../domain/clock.ts';

export const TICKET_TTL_S = 60;
const AUDIENCE = 'taskflow-ws';
const ISSUER = 'taskflow-gateway';

/** Records a ticket's use; false when it was used before. */
export type SpendTicket = (jti: string, expiresAt: Date, now: Date) => Promise<boolean>;

/** One process's memory of used tickets (tests; a single instance). */
export function spendInMemory(): SpendTicket {
  const used = new Map<string, number>();
  return async (jti, expiresAt, now) => {
    for (const [id, exp] of used) if (exp < now.getTime()) used.delete(id);
    if (used.has(jti)) return false;
    used.set(jti, expiresAt.getTime());
    return true;
  };
}

/** A valid ticket not used yet: `spend` uses it (AuthError when another upgrade did first). */
export interface VerifiedTicket {
  user: Principal;
  spend(): Promise<void>;
}

export class TicketIssuer {
  private readonly key: Uint8Array;

  /** `secret`: the JWT HS256 secret or GATEWAY_TICKET_SECRET; without one, tickets work on this instance only. */
  constructor(
    secret: string | undefined,
    private readonly clock: Clock,
    private readonly spend: SpendTicket = spendInMemory(),
  ) {
    this.key = secret
      ? createHmac('sha256', secret).update('taskflow ws-ticket v1').digest()
      : randomBytes(32);
  }

  /**
   * A ticket for `user`; the socket it opens ends when the user's token does (`token_exp`, in seconds, as
   * `exp`), not when the ticket does.
   */
  async issue(user: Principal): Promise<{ ticket: string; expires_in: number }> {
    const now = Math.floor(this.clock.now().getTime() / 1000);
    const ticket = await new SignJWT({ token_exp: Math.floor(user.expiresAt / 1000) })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(user.userId)
      .setAudience(AUDIENCE)
      .setIssuer(ISSUER)
      .setJti(randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + TICKET_TTL_S)
      .sign(this.key);
    return { ticket, expires_in: TICKET_TTL_S };
  }

  /**
   * Checks `ticket` without using it: the caller spends it last, once nothing else refuses the upgrade, so a
   * refused upgrade leaves the ticket to a retry within its 60 s.
   */
  async verify(ticket: string): Promise<VerifiedTicket> {
    const now = this.clock.now();
    let payload;
    try {
      ({ payload } = await jwtVerify(ticket, this.key, {
        algorithms: ['HS256'],
        audience: AUDIENCE,
        issuer: ISSUER,
        currentDate: now,
      }));
    } catch {
      throw new AuthError('ticket is invalid or expired');
    }
    const tokenExp = payload.token_exp;
    if (typeof payload.sub !== 'string' || !payload.jti || typeof tokenExp !== 'number')
      throw new AuthError('ticket is invalid');
    // The socket ends with the token: a ticket outliving it opens none.
    if (tokenExp * 1000 <= now.getTime())
      throw new AuthError('the token this ticket was made with has expired; sign in again');
    const { jti, exp = 0 } = payload;
    return {
      user: { userId: payload.sub, expiresAt: tokenExp * 1000 },
      spend: async () => {
        if (!(await this.spend(jti, new Date(exp * 1000), this.clock.now())))
          throw new AuthError('ticket was already used');
      },
    };
  }
}
