/**
 * One process per PGlite data directory (store/data-dir-lock.ts): a second opener refuses with a line that
 * names the owner, in this process and from the CLI (a second `up`, `migrate`, `audit verify`, `lag`, `mcp`
 * on stdio) while `taskflow up` runs; a lock whose owner died
 * (kill -9) or whose pid was reused is taken over, and the data written before the kill is there.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs, {
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { DataDirectoryInUseError, LOCK_FILE, lockDataDirectory } from '../../src/store/data-dir-lock.ts';
import { openDb } from '../../src/store/db.ts';
import { stopChild } from '../helpers/processes.ts';

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
