/** Starts and stops named local Kafka brokers through scripts/kafka (the same script users run). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../../scripts/kafka', import.meta.url));

export async function kafka(
  command: 'start' | 'stop' | 'reset',
  name: string,
  extra: string[] = [],
): Promise<Record<string, string>> {
  const { stdout } = await run(script, [command, '--name', name, ...extra], { timeout: 180_000 });
  return Object.fromEntries(
    stdout
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}
