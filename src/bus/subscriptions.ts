/**
 * The live group members of a Subscriber: each is started on `subscribe`, closed by its own Subscription or
 * by closing the Subscriber, once either way.
 */
import type { Subscription } from './types.ts';

export interface GroupMemberLike {
  start(): Promise<void>;
  close(): Promise<void>;
}

export class LiveSubscriptions<M extends GroupMemberLike> {
  /** Each live member with whether its start-up succeeded; a close waits for it (only a started member closes). */
  private readonly members = new Map<M, Promise<boolean>>();

  /** Starts the member and tracks it until it is closed; a member that fails to start is not tracked. */
  async add(member: M): Promise<Subscription> {
    const starting = member.start();
    this.members.set(
      member,
      starting.then(
        () => true,
        () => false,
      ),
    );
    try {
      await starting;
    } catch (err) {
      this.members.delete(member);
      throw err;
    }
    return { close: () => this.closeMember(member) };
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.members.keys()].map((m) => this.closeMember(m)));
  }

  private async closeMember(member: M): Promise<void> {
    const started = this.members.get(member);
    if (!started) return;
    this.members.delete(member);
    if (await started) await member.close();
  }
}
