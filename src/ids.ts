/**
 * UUIDv7s (time-ordered ids of tasks, events, notifications, chat messages). The library's default random
 * source asks webcrypto for 8 words at a time, a call every two or three ids: 2.4 % of the API's thread in
 * `bench:api`'s profile. Here its words come 256 at a time from one `randomFillSync`: 212-221 against
 * 381-416 ns per id (a million ids each way, three rounds, Node 20). The ids are not secrets, and the
 * generator still keeps them monotonic within a millisecond.
 */
import { randomFillSync } from 'node:crypto';
import { V7Generator } from 'uuidv7';

const WORDS = 256;

class BufferedRandom {
  private readonly words = new Uint32Array(WORDS);
  private cursor = WORDS;

  nextUint32(): number {
    if (this.cursor === WORDS) {
      randomFillSync(this.words);
      this.cursor = 0;
    }
    return this.words[this.cursor++]!;
  }
}

const generator = new V7Generator(new BufferedRandom());

/** A new UUIDv7 in its canonical 8-4-4-4-12 form. */
export const uuidv7 = (): string => generator.generate().toString();
