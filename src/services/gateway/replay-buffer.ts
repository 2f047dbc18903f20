/**
 * The gateway's bounded per-user replay buffer: the latest `task.changed` frames of each user, contiguous in
 * sequence, so a client that reconnects with `?since=<sequence>` gets what it missed. Bounded per user
 * (`perUser` frames) and in total (`maxBytes` of frames, their UTF-8 bytes; the least recently updated users
 * lose their oldest frames first). A client whose `since` is older than what is kept is told to resync.
 *
 * The frames are held as their UTF-8 bytes, each in its own ArrayBuffer (not a slice of a shared pool, which a
 * frame kept would keep whole), so the bytes counted are the bytes held: a string would take two bytes a
 * character in V8 once it has one beyond Latin-1, and UTF-8 three for a Chinese one. A frame dropped (the
 * per-user bound, the byte bound) is let go at once: its slot is cleared, not left for the compaction.
 */
export interface BufferedFrame {
  seq: number;
  /** The serialized frame (UTF-8), sent as is (a text frame) to every connection of the user. */
  frame: Uint8Array;
}

const encoder = new TextEncoder();

/** A frame's text as the buffer keeps it and the sockets send it: UTF-8, in an ArrayBuffer of its own. */
export const encodeFrame = (text: string): Uint8Array => encoder.encode(text);

export type ReplayPlan =
  { kind: 'replay'; frames: BufferedFrame[]; latest: number } | { kind: 'resync'; latest: number | null };

interface UserBuffer {
  /** The live frames from `start` on; the slots before it are cleared (trimmed) and compacted lazily. */
  frames: (BufferedFrame | undefined)[];
  /** Index of the first live frame in `frames`. */
  start: number;
}

export class ReplayBuffer {
  private readonly users = new Map<string, UserBuffer>();
  private bytes = 0;

  constructor(
    private readonly perUser: number,
    private readonly maxBytes: number,
  ) {}

  get totalBytes(): number {
    return this.bytes;
  }

  /** What the buffer holds on to (the frames it references and their UTF-8 bytes), dropped ones included. */
  retained(): { frames: number; bytes: number } {
    let frames = 0;
    let bytes = 0;
    for (const b of this.users.values())
      for (const f of b.frames) {
        if (!f) continue;
        frames++;
        bytes += f.frame.byteLength;
      }
    return { frames, bytes };
  }

  latest(user: string): number | null {
    const b = this.users.get(user);
    if (!b || b.start >= b.frames.length) return null;
    return b.frames[b.frames.length - 1]!.seq;
  }

  /**
   * Adds a frame; returns false for a duplicate (sequence already seen). A gap (a frame newer than the next
   * expected one) restarts the user's buffer, so a resume across the gap resyncs instead of skipping.
   */
  add(user: string, seq: number, frame: Uint8Array): boolean {
    let b = this.users.get(user);
    const latest = this.latest(user);
    if (latest !== null && seq <= latest) return false;
    if (!b || (latest !== null && seq !== latest + 1)) {
      if (b) this.dropUser(user, b);
      b = { frames: [], start: 0 };
    } else this.users.delete(user); // re-inserted below: Map order is least recently updated first
    this.users.set(user, b);
    b.frames.push({ seq, frame });
    this.bytes += frame.byteLength;
    while (b.frames.length - b.start > this.perUser) this.trimOldest(b);
    this.compact(b);
    this.enforceBytes();
    return true;
  }

  /** Whether a resume from `since` needs the user's stream head as committed (`plan`'s `head`). */
  needsHead(user: string, since: number | undefined): boolean {
    const latest = this.latest(user);
    return latest === null || (since !== undefined && since > latest);
  }

  /**
   * What a client that has seen everything up to `since` needs: the frames after it, or a resync. With nothing
   * of the user held (a restart, or trimmed for memory), `head`, the stream's latest as committed, says whether
   * the client has missed anything; unknown, it resyncs. A `since` past the newest frame held is checked
   * against `head` too: at or below it, this instance is behind the stream (a replica whose consumer lags, one
   * refilling its buffer after a restart), not the client, which then has nothing to replay (`latest`: its
   * own `since`; what it lacks comes live as the instance catches up). Past `head` (or `head` unknown), the
   * client's state is not from this stream (a reset database say): a resync, as waiting for the stream to pass
   * it would leave it without updates.
   */
  plan(user: string, since: number, head?: number): ReplayPlan {
    const b = this.users.get(user);
    const latest = this.latest(user);
    if (!b || latest === null) {
      if (head === undefined) return { kind: 'resync', latest: null };
      return since === head ? { kind: 'replay', frames: [], latest: head } : { kind: 'resync', latest: head };
    }
    if (since > latest) {
      if (head !== undefined && since <= head) return { kind: 'replay', frames: [], latest: since };
      return { kind: 'resync', latest: Math.max(latest, head ?? latest) };
    }
    if (since === latest) return { kind: 'replay', frames: [], latest };
    const first = b.frames[b.start]!.seq;
    if (since + 1 < first) return { kind: 'resync', latest };
    return {
      kind: 'replay',
      frames: b.frames.slice(b.start + (since + 1 - first)) as BufferedFrame[],
      latest,
    };
  }

  private trimOldest(b: UserBuffer) {
    const f = b.frames[b.start];
    if (!f) return;
    this.bytes -= f.frame.byteLength;
    b.frames[b.start] = undefined; // let go of it now, not at the next compaction
    b.start++;
  }

  private compact(b: UserBuffer) {
    if (b.start > 64 && b.start * 2 > b.frames.length) {
      b.frames = b.frames.slice(b.start);
      b.start = 0;
    }
  }

  private dropUser(user: string, b: UserBuffer) {
    for (let i = b.start; i < b.frames.length; i++) this.bytes -= b.frames[i]!.frame.byteLength;
    this.users.delete(user);
  }

  private enforceBytes() {
    while (this.bytes > this.maxBytes) {
      const [user, b] = this.users.entries().next().value as [string, UserBuffer];
      // Keep the newest frame of the most recently updated user at least.
      if (this.users.size === 1 && b.frames.length - b.start <= 1) return;
      this.trimOldest(b);
      if (b.start >= b.frames.length) this.users.delete(user);
      else this.compact(b);
    }
  }
}
