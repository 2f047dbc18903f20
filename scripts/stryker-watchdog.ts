/**
 * Preloaded into every test process of `npm run test:mutation` (stryker.config.json, tap.nodeArgs). A mutant
 * can turn a loop into an endless one; Stryker then times the run out and replaces its worker, but the test
 * process that worker had started goes on spinning, an orphan that slows every later run. A worker thread
 * (which runs even while the main thread is stuck in a loop) kills this process when its parent is gone, or
 * after STRYKER_TEST_MAX_MS (default 120 s) in any case.
 */
import { Worker } from 'node:worker_threads';

const maxMs = Number(process.env.STRYKER_TEST_MAX_MS ?? 120_000);
const watchdog = new Worker(
  `const { workerData: { pid, ppid, maxMs } } = require('node:worker_threads');
   const started = Date.now();
   setInterval(() => {
     if (process.ppid !== ppid || Date.now() - started > maxMs) process.kill(pid, 'SIGKILL');
   }, 250);`,
  { eval: true, workerData: { pid: process.pid, ppid: process.ppid, maxMs } },
);
watchdog.unref();
