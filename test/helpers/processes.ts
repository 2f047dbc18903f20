/**
 * Taskflow as a user runs it, in a child process: `bin/taskflow.js serve <targets>` on a port picked free
 * beforehand. Everything the child prints (JSON logs on stdout, Node's own errors on stderr) is kept, so a
 * server that fails to start fails the test at once with its own words instead of a bare timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';

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
  const [port] = await freePorts(1);
  const child = spawn(process.execPath, ['bin/taskflow.js', 'serve', ...targets], {
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (b: Buffer) => (out += b.toString());
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
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
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const ready = await Promise.race([
        exited,
        fetch(`${url}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      ]);
      if (ready) return { child, url, output: () => out };
      if (Date.now() > deadline)
        throw new Error(`taskflow serve ${targets.join(' ')} not ready within ${timeoutMs} ms:\n${out}`);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 50))]);
    }
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}
