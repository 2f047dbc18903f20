/**
 * One process per PGlite data directory (store/data-dir-lock.ts): a second opener refuses with a line that
 * names the owner, in this process and from the CLI (a second `up`, `migrate`, `audit verify`, `lag`, `mcp`
 * on stdio) while `taskflow up` runs; a lock whose owner died
 * (kill -9) or whose pid was reused is taken over, and the data written before the kill is there. A lock whose
 * owner cannot be seen from here (another pid namespace: a container, whatever its host name; another host) is
 * kept while its owner renews it and taken over once it has not for LOCK_STALE_MS; a holder that finds its lock
 * taken over ends at once. Across real pid namespaces (containers) when this runs as root with unshare(1).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs, {
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import {
  DataDirectoryInUseError,
  LOCK_FILE,
  LOCK_RENEW_MS,
  LOCK_STALE_MS,
  lockDataDirectory,
} from '../../src/store/data-dir-lock.ts';
import { openDb } from '../../src/store/db.ts';
import { startServer, stopChild } from '../helpers/processes.ts';

const dirs: string[] = [];
const freshDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'taskflow-lock-'));
  dirs.push(d);
  return join(d, 'db');
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('PGlite data directory lock', () => {
  it('refuses a second open while the first is open, and allows it after close', async () => {
    const dir = freshDir();
    const first = await openDb(dir);
    await first.exec(`CREATE TABLE t (id int)`);
    await assert.rejects(openDb(dir), (err: unknown) => {
      assert.ok(err instanceof DataDirectoryInUseError);
      assert.match(err.message, new RegExp(`in use by process ${process.pid} `));
      return true;
    });
    await first.close();
    const second = await openDb(dir);
    await second.query(`INSERT INTO t VALUES (1)`);
    await second.close();
  });

  it('takes over a lock whose process is gone or whose pid now names another process', async () => {
    const dir = freshDir();
    await (await openDb(dir)).close();
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    const lock = (owner: object) => writeFileSync(join(dir, LOCK_FILE), JSON.stringify(owner));
    lock({ pid: Number(dead.stdout.trim()), host: hostname(), started: '1', command: 'gone' });
    await (await openDb(dir)).close();
    lock({ pid: process.pid, host: hostname(), started: 'another boot', command: 'reused pid' });
    await (await openDb(dir)).close();
    writeFileSync(join(dir, LOCK_FILE), '{"pid":'); // torn write of a crashed opener
    await (await openDb(dir)).close();
  });

  it('`taskflow up` holds the directory: a second up and the CLI refuse with one line; after kill -9 they work', async () => {
    const dir = freshDir();
    const env = {
      ...process.env,
      DATABASE_URL: dir,
      PORT: '0',
      LOG_LEVEL: 'warn',
      BUS: 'embedded',
      JWT_SECRET: '',
    };
    const server = spawn(process.execPath, ['bin/taskflow.js', 'up'], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      let out = '';
      const { url, token } = await new Promise<{ url: string; token: string }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`not up within 120 s:\n${out}`)), 120_000);
        server.stderr!.on('data', (b: Buffer) => {
          out += b.toString();
          const u = /running at (http:\/\/\S+)/.exec(out)?.[1];
          const t = /export TOKEN=(\S+)/.exec(out)?.[1];
          if (u && t) {
            clearTimeout(timer);
            resolve({ url: u, token: t });
          }
        });
        server.on('exit', (code) => reject(new Error(`taskflow up exited with ${code}:\n${out}`)));
      });
      const owner = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number };
      assert.equal(owner.pid, server.pid);
      const cli = (...args: string[]) =>
        spawnSync(process.execPath, ['bin/taskflow.js', ...args], {
          env: { ...env, TASKFLOW_TOKEN: token },
          encoding: 'utf8',
          timeout: 120_000,
        });
      for (const args of [['up'], ['migrate'], ['audit', 'verify'], ['lag'], ['mcp']]) {
        const r = cli(...args);
        assert.notEqual(r.status, 0, `${args.join(' ')} must refuse`);
        assert.match(
          r.stderr,
          new RegExp(`data directory .* is in use by process ${server.pid} `),
          args.join(' '),
        );
        assert.ok(r.stderr.trim().split('\n').length <= 2, `one clear line, not a stack:\n${r.stderr}`);
      }
      assert.equal((await fetch(`${url}/readyz`)).status, 200); // the server went on undisturbed
      await stopChild(server, 'SIGKILL');
      const migrate = cli('migrate');
      assert.equal(migrate.status, 0, migrate.stderr);
      assert.match(migrate.stdout, /up to date/);
    } finally {
      server.kill('SIGKILL');
    }
  });
});

describe('a lock naming a process on another host (a data directory on a shared volume)', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  it('is not taken over, whatever its pid is here: that process may well run on its own host', async () => {
    const root = mkdtempSync(join(tmpdir(), 'taskflow-lock-host-'));
    dirs.push(root);
    const dir = join(root, 'db');
    await (await openDb(dir)).close();
    writeFileSync(
      join(dir, LOCK_FILE),
      JSON.stringify({ pid: 4_000_000, host: 'another-host.example', started: '1', command: 'taskflow up' }),
    );
    await assert.rejects(openDb(dir), (err: unknown) => {
      assert.ok(err instanceof DataDirectoryInUseError, String(err));
      assert.match(err.message, /in use by process 4000000 .* on another-host\.example/);
      return true;
    });
  });
});

/** Whether users other than its owner can run `file`: it and every directory above it open to others. */
function othersCanRun(file: string): boolean {
  for (let path = file; ; path = dirname(path)) {
    if ((statSync(path).mode & 0o001) === 0) return false;
    if (dirname(path) === path) return true;
  }
}

describe("a lock whose pid a reboot gave to another user's process", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  it(
    'is taken over: the start time tells a reused pid, whoever runs it now',
    { skip: process.platform === 'linux' ? false : 'needs /proc' },
    (t) => {
      // Pid 1 runs as root: the opener runs as another user (nobody) when this test runs as root, with this
      // test's node, which that user must be able to run (not one under root's home, as npx's node@24 is).
      const asRoot = process.getuid?.() === 0;
      if (asRoot && !othersCanRun(process.execPath))
        return t.skip(`user nobody cannot run ${process.execPath}`);
      const root = mkdtempSync(join(tmpdir(), 'taskflow-lock-user-'));
      dirs.push(root);
      const dir = join(root, 'db');
      mkdirSync(dir);
      if (asRoot) for (const d of [root, dir]) chownSync(d, 65534, 65534);
      writeFileSync(
        join(dir, LOCK_FILE),
        JSON.stringify({ pid: 1, host: hostname(), started: 'before the reboot', command: 'taskflow up' }),
      );
      const lockModule = fileURLToPath(new URL('../../src/store/data-dir-lock.ts', import.meta.url));
      const opener = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          `import { lockDataDirectory } from ${JSON.stringify(lockModule)};
           lockDataDirectory(${JSON.stringify(dir)}).release();
           console.log('taken');`,
        ],
        { encoding: 'utf8', ...(asRoot ? { uid: 65534, gid: 65534 } : {}) },
      );
      assert.equal(opener.stdout.trim(), 'taken', opener.stderr);
    },
  );
});

describe('processes taking over one stale lock at the same moment', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  it('give it to one of them, never two (the restart after a kill -9, by a supervisor and a user at once)', async () => {
    const root = mkdtempSync(join(tmpdir(), 'taskflow-lock-race-'));
    dirs.push(root);
    const module = new URL('../../src/store/data-dir-lock.ts', import.meta.url).href;
    // Each child waits for the agreed instant, then takes the lock of the directory it is sent.
    const child = `
      const { lockDataDirectory } = await import(${JSON.stringify(module)});
      process.on('message', ({ go, dir }) => {
        while (Date.now() < go) {}
        let got;
        try { lockDataDirectory(dir); got = true; } catch (e) { got = e.name; }
        process.send({ got });
      });
      process.send({ ready: true });`;
    const kids = [0, 1, 2].map(() =>
      spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    );
    try {
      await Promise.all(kids.map((k) => new Promise((r) => k.once('message', r))));
      const dead = Number(
        spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).stdout.trim(),
      );
      const outcomes = new Map<string, number>();
      for (let round = 0; round < 60; round++) {
        const dir = join(root, String(round));
        mkdirSync(dir);
        writeFileSync(
          join(dir, LOCK_FILE),
          JSON.stringify({ pid: dead, host: hostname(), started: '1', command: 'killed' }),
        );
        const go = Date.now() + 30;
        const got = await Promise.all(
          kids.map((k) => {
            const answer = new Promise<{ got: true | string }>((r) => k.once('message', r));
            k.send({ go, dir });
            return answer;
          }),
        );
        const key = got
          .map((g) => String(g.got))
          .sort()
          .join(' + ');
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
      assert.deepEqual(
        [...outcomes.keys()],
        ['DataDirectoryInUseError + DataDirectoryInUseError + true'],
        JSON.stringify([...outcomes]),
      );
    } finally {
      kids.forEach((k) => k.kill());
    }
  });
});

describe('a process paused while it takes over a stale lock', () => {
  it('finds the lock another took meanwhile, and refuses: the other keeps it', async () => {
    const root = mkdtempSync(join(tmpdir(), 'taskflow-lock-paused-'));
    const dir = join(root, 'db');
    mkdirSync(dir);
    const file = join(dir, LOCK_FILE);
    writeFileSync(
      file,
      JSON.stringify({ pid: 4_000_000, host: hostname(), started: '1', command: 'killed' }),
    );
    const module = new URL('../../src/store/data-dir-lock.ts', import.meta.url).href;
    const holder = `
      const { lockDataDirectory } = await import(${JSON.stringify(module)});
      try { lockDataDirectory(process.argv[1]); console.log('held'); } catch (e) { console.log('refused ' + e.name); }
      setInterval(() => {}, 1000);`;
    let a: ReturnType<typeof spawn> | undefined;
    const lockedBy = () => {
      try {
        return (JSON.parse(readFileSync(file, 'utf8')) as { pid: number }).pid;
      } catch {
        return undefined;
      }
    };
    // This process read the stale lock and is about to take the takeover marker when it is descheduled: another
    // process takes the lock over meanwhile and runs.
    const link = fs.linkSync;
    fs.linkSync = ((existing: fs.PathLike, target: fs.PathLike) => {
      if (!a && String(target) === `${file}.takeover`) {
        a = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', holder, dir], {
          stdio: 'ignore',
        });
        const end = Date.now() + 30_000;
        while (lockedBy() !== a.pid && Date.now() < end) spawnSync('sleep', ['0.05']);
      }
      return link(existing, target);
    }) as typeof fs.linkSync;
    syncBuiltinESMExports();
    try {
      assert.throws(() => lockDataDirectory(dir), DataDirectoryInUseError);
      assert.equal(lockedBy(), a?.pid, 'the other process keeps the lock');
    } finally {
      fs.linkSync = link;
      syncBuiltinESMExports();
      a?.kill();
      rmSync(root, { recursive: true, force: true });
    }
  });
});

/** A lock as this version writes it, of a process in pid namespace `pidNamespace` (none here: a container). */
const lockOf = (owner: { pid: number; host: string; pidNamespace: string }) =>
  JSON.stringify({
    ...owner,
    started: '1',
    boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    command: 'taskflow up',
  });
const hourAgo = () => new Date(Date.now() - 3_600_000);

describe(
  'a lock of a process in another pid namespace or on another host',
  { skip: process.platform === 'linux' ? false : 'needs /proc' },
  () => {
    const dirs: string[] = [];
    after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const newDir = async () => {
      const root = mkdtempSync(join(tmpdir(), 'taskflow-lock-renewed-'));
      dirs.push(root);
      const dir = join(root, 'db');
      await (await openDb(dir)).close();
      return dir;
    };

    it('is kept while renewed, whatever its pid is here, and taken over once not renewed for LOCK_STALE_MS', async () => {
      for (const owner of [
        // A container with this host's name (--network host, hostNetwork): its pid 1 is not this pid 1.
        { pid: 1, host: hostname(), pidNamespace: 'pid:[1]' },
        { pid: process.pid, host: hostname(), pidNamespace: 'pid:[1]' },
        // A killed container's lock, found by its replacement (a new host name).
        { pid: 1, host: 'c0ffee000001', pidNamespace: 'pid:[1]' },
      ]) {
        const dir = await newDir();
        const file = join(dir, LOCK_FILE);
        writeFileSync(file, lockOf(owner));
        const justRenewed = new Date(Date.now() - LOCK_STALE_MS + 5_000);
        utimesSync(file, justRenewed, justRenewed);
        await assert.rejects(openDb(dir), (err: unknown) => {
          assert.ok(err instanceof DataDirectoryInUseError, String(err));
          assert.match(
            err.message,
            new RegExp(`in use by process ${owner.pid} .* on ${owner.host}, in another`),
          );
          assert.match(err.message, /renewed its lock 25 s ago/);
          return true;
        });
        utimesSync(file, hourAgo(), hourAgo());
        await (await openDb(dir)).close();
      }
    });

    it('is renewed by its holder every LOCK_RENEW_MS', async () => {
      const dir = await newDir();
      const file = join(dir, LOCK_FILE);
      const module = new URL('../../src/store/data-dir-lock.ts', import.meta.url).href;
      const holder = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          `const { lockDataDirectory } = await import(${JSON.stringify(module)});
         lockDataDirectory(process.argv[1]); console.log('held'); setInterval(() => {}, 1000);`,
          dir,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        await new Promise((r) => holder.stdout!.once('data', r));
        utimesSync(file, hourAgo(), hourAgo());
        await new Promise((r) => setTimeout(r, LOCK_RENEW_MS + 2_000));
        const age = Date.now() - statSync(file).mtimeMs;
        assert.ok(age < LOCK_RENEW_MS + 1_000, `the lock was last renewed ${Math.round(age / 1000)} s ago`);
      } finally {
        await stopChild(holder, 'SIGKILL');
      }
    });

    it('taken over from a running server makes it stop at once, saying so, leaving the new owner its lock', async () => {
      const dir = await newDir();
      const file = join(dir, LOCK_FILE);
      const server = await startServer(['api'], {
        DATABASE_URL: dir,
        BUS: 'embedded',
        JWT_SECRET: '',
        LOG_LEVEL: 'warn',
      });
      try {
        const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
        // As a process in another container takes a lock not renewed for LOCK_STALE_MS (this one was paused):
        // its own lock, written aside and renamed over this one.
        const theirs = lockOf({ pid: 1, host: 'c0ffee000002', pidNamespace: 'pid:[1]' });
        writeFileSync(`${file}.theirs`, theirs);
        renameSync(`${file}.theirs`, file);
        const code = await Promise.race([
          exited,
          new Promise<string>((r) => setTimeout(() => r('still running'), LOCK_RENEW_MS * 3).unref()),
        ]);
        assert.equal(code, 1, server.output());
        assert.match(
          server.output(),
          /the lock of the data directory .* was taken over by process 1 \(taskflow up\) on c0ffee000002; .*this process stops now/,
        );
        assert.equal(readFileSync(file, 'utf8'), theirs, 'the new owner keeps its lock');
      } finally {
        await stopChild(server.child, 'SIGKILL');
      }
    });
  },
);

const canUnshare = process.getuid?.() === 0 && spawnSync('unshare', ['-u', '-p', '-f', 'true']).status === 0;

describe(
  'the lock across pid namespaces (containers: pid 1, a host name of their own)',
  { skip: !canUnshare && 'needs root and unshare(1)' },
  () => {
    const dirs: string[] = [];
    after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const freshRoot = () => {
      const d = mkdtempSync(join(tmpdir(), 'taskflow-lock-ns-'));
      dirs.push(d);
      return join(d, 'db');
    };
    const env = (dir: string) => ({
      ...process.env,
      DATABASE_URL: dir,
      PORT: '0',
      LOG_LEVEL: 'warn',
      BUS: 'embedded',
      JWT_SECRET: '',
    });
    /** `unshare` running `bin/taskflow.js <args>` as pid 1 of a new pid namespace, with host name `host`. */
    const inContainer = (host: string, args: string[]) => [
      '-u',
      '-p',
      '--kill-child',
      '--mount-proc',
      'sh',
      '-c',
      `hostname ${host} && exec "${process.execPath}" bin/taskflow.js ${args.join(' ')}`,
    ];
    const run = (host: string, dir: string, args: string[]) =>
      spawnSync('unshare', inContainer(host, args), { env: env(dir), encoding: 'utf8', timeout: 120_000 });

    /** `taskflow up` in a container, once it serves; `node` is its pid 1 as this namespace numbers it. */
    async function up(
      host: string,
      dir: string,
    ): Promise<{ unshare: ChildProcess; node: number; output: () => string }> {
      const unshare = spawn('unshare', inContainer(host, ['up']), {
        env: env(dir),
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let out = '';
      unshare.stderr!.on('data', (b: Buffer) => (out += b.toString()));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`not up within 120 s:\n${out}`)), 120_000);
        const check = () => {
          if (!/running at http/.test(out)) return;
          clearTimeout(timer);
          unshare.stderr!.off('data', check);
          resolve();
        };
        unshare.stderr!.on('data', check);
        unshare.once('exit', (code) => reject(new Error(`taskflow up exited with ${code}:\n${out}`)));
      });
      const node = Number(readFileSync(`/proc/${unshare.pid}/task/${unshare.pid}/children`, 'utf8').trim());
      assert.equal(readlinkSync(`/proc/${node}/exe`), process.execPath);
      return { unshare, node, output: () => out };
    }

    it('a second container with the same host name refuses while the first runs, and leaves its lock', async () => {
      const dir = freshRoot();
      const first = await up('box', dir);
      try {
        const lock = readFileSync(join(dir, LOCK_FILE), 'utf8');
        const second = run('box', dir, ['migrate']);
        assert.notEqual(
          second.status,
          0,
          `migrate opened the directory \`taskflow up\` serves:\n${second.stdout}`,
        );
        assert.match(second.stderr, /is in use by process 1 .* on box, in another pid namespace/);
        assert.equal(readFileSync(join(dir, LOCK_FILE), 'utf8'), lock, 'the running server keeps its lock');
      } finally {
        await stopChild(first.unshare, 'SIGKILL'); // --kill-child: its pid 1 with it
      }
    });

    it('the replacement of a killed container takes its lock over once not renewed for LOCK_STALE_MS', async () => {
      const dir = freshRoot();
      const killed = await up('c0ffee000001', dir);
      await stopChild(killed.unshare, 'SIGKILL'); // docker kill, the OOM killer, the node lost: the lock stays
      utimesSync(join(dir, LOCK_FILE), hourAgo(), hourAgo());
      const replacement = run('c0ffee000002', dir, ['migrate']); // a new container: a new host name
      assert.equal(
        replacement.status,
        0,
        `the new container never gets the data directory:\n${replacement.stderr}`,
      );
    });

    it('a server paused while another container took its lock over stops when it runs again; the other serves on', async () => {
      const dir = freshRoot();
      const paused = await up('box', dir);
      let other: Awaited<ReturnType<typeof up>> | undefined;
      try {
        process.kill(paused.node, 'SIGSTOP');
        utimesSync(join(dir, LOCK_FILE), hourAgo(), hourAgo()); // as LOCK_STALE_MS without a renewal would
        other = await up('box', dir);
        const otherLock = readFileSync(join(dir, LOCK_FILE), 'utf8');
        const exited = new Promise<number | null>((r) => paused.unshare.once('exit', (code) => r(code)));
        process.kill(paused.node, 'SIGCONT');
        const code = await Promise.race([
          exited,
          new Promise<string>((r) => setTimeout(() => r('still running'), LOCK_RENEW_MS * 3).unref()),
        ]);
        assert.notEqual(code, 0, paused.output());
        assert.notEqual(code, 'still running', `two servers write one directory:\n${paused.output()}`);
        assert.match(paused.output(), /was taken over by process 1 .* on box; .*this process stops now/);
        assert.equal(readFileSync(join(dir, LOCK_FILE), 'utf8'), otherLock, 'the other keeps its lock');
        assert.equal(other.unshare.exitCode, null, 'the other serves on');
      } finally {
        await stopChild(paused.unshare, 'SIGKILL');
        if (other) await stopChild(other.unshare, 'SIGKILL');
      }
    });
  },
);
