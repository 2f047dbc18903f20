// Preloaded into every test process by scripts/test, which sets TEST_EXIT_HANG_LOG. A test file's process can hang
// for good in Node's own shutdown after its tests are done (the main thread joins a V8 platform worker that
// missed its wake-up: nodejs/node#64274; seen once on Node 24.21 in CI), and the runner waits for it until the
// whole run is cut off. Here, as such a process starts to exit, a detached shell is left to kill it if it is
// still there a while later (the same pid with the same start time), writing its exit code and file to the log
// first: scripts/test then knows that the failure the runner reports for that file is the hang alone.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const hangLog = process.env.TEST_EXIT_HANG_LOG;
// Only a test file's own process (the runner's child): not the runner, nor the processes a test starts.
const testFile = /\.test\.[cm]?[jt]s$/.test(process.argv[1] ?? '');
if (hangLog && testFile && process.env.NODE_TEST_CONTEXT && process.platform === 'linux') {
  const afterSeconds = Number(process.env.TEST_EXIT_WATCHDOG_S ?? 60);
  /** Field 22 of /proc/<pid>/stat: the start time, which tells a reused pid from this process. */
  const startTime = (pid) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[19];
  process.on('exit', (code) => {
    const pid = process.pid;
    const line = `${code} ${process.argv[1]}`;
    const script = `sleep "$1"; s=$(sed 's/.*) //' /proc/$2/stat 2>/dev/null | cut -d' ' -f20)
[ "$s" = "$3" ] && printf '%s\\n' "$4" >> "$5" && kill -9 "$2"`;
    try {
      spawn(
        'sh',
        ['-c', script, 'exit-watchdog', String(afterSeconds), String(pid), startTime(pid), line, hangLog],
        {
          detached: true,
          stdio: 'ignore',
        },
      ).unref();
    } catch {
      // No watchdog for this exit: the run's own time limit still applies.
    }
  });
}
