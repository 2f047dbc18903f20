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
  private readonly members = new Set<M>();

  /** Starts the member and tracks it until it is closed; a member that fails to start is not tracked. */
  async add(member: M): Promise<Subscription> {
    this.members.add(member);
    try {
      await member.start();
    } catch (err) {
      this.members.delete(member);
      throw err;
    }
    return {
      close: async () => {
        if (!this.members.delete(member)) return;
        await member.close();
      },
    };
  }

  async closeAll(): Promise<void> {
    const members = [...this.members];
    this.members.clear();
    await Promise.all(members.map((m) => m.close()));
  }
}
