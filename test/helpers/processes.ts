/**
 * Taskflow as a user runs it, in a child process: `bin/taskflow.js serve <targets>` on a port of its own
 * (PORT=0, reported by report-port.mjs). Everything the child prints (JSON logs on stdout, Node's own errors
 * on stderr) is kept, so a server that fails to start fails the test at once with its own words instead of a
 * bare timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';

const REPORT_PORT = fileURLToPath(new URL('./report-port.mjs', import.meta.url));

/** `n` distinct free TCP ports on 127.0.0.1 (all held at once, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', resolve);
      });
      servers.push(s);
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

/**
 * Sends `signal` to a child and resolves once it has exited; at once when it had exited already (an
 * `exit` listener added then would wait forever).
 */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** What the child printed so far, stdout and stderr interleaved. */
  output(): string;
}

/**
 * Starts `taskflow serve <targets>` and resolves once `/readyz` answers 200. Rejects with the child's output
 * when it exits first or is not ready within `timeoutMs`.
 */
export async function startServer(
  targets: readonly string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', REPORT_PORT, 'bin/taskflow.js', 'serve', ...targets], {
    env: { ...process.env, ...env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let out = '';
  const keep = (b: Buffer) => (out += b.toString());
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) =>
      reject(
        new Error(
          `taskflow serve ${targets.join(' ')} exited (${signal ?? code}) before it was ready:\n${out}`,
        ),
      ),
    ),
  );
  exited.catch(() => {}); // observed below; an exit after readiness is the test's business
  const listening = new Promise<number>((resolve) =>
    child.on('message', (m: { listening?: number }) => {
      if (typeof m.listening === 'number') resolve(m.listening);
    }),
  );
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new Error(`taskflow serve ${targets.join(' ')} not ready within ${timeoutMs} ms:\n${out}`)),
      timeoutMs,
    );
  });
  timedOut.catch(() => {}); // raced below, and left alone once the server is ready
  // Whichever comes first ends each wait: the child's exit, the deadline, or what is awaited.
  const orExitOrDeadline = <T>(p: Promise<T>) => Promise.race([exited, timedOut, p]);
  try {
    const url = `http://127.0.0.1:${await orExitOrDeadline(listening)}`;
    for (;;) {
      const ready = await orExitOrDeadline(
        fetch(`${url}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      );
      if (ready) return { child, url, output: () => out };
      await orExitOrDeadline(new Promise((r) => setTimeout(r, 50)));
    }
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
