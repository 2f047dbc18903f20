/**
 * A target's housekeeping pass on a timer of its own: a second after start (a target restarted more often than
 * the period passes too), then every `everyMs`, one pass at a time. `stop` ends the timers and waits for a pass
 * under way, whose `goOn` then says to end between two of its batches.
 */
export function periodicPass(
  pass: (goOn: () => boolean) => Promise<void>,
  everyMs: number,
): { stop(): Promise<void> } {
  let stopping = false;
  let running: Promise<void> | undefined;
  const run = () => {
    running ??= pass(() => !stopping).finally(() => (running = undefined));
  };
  const first = setTimeout(run, 1_000).unref();
  const every = setInterval(run, everyMs).unref();
  return {
    async stop() {
      stopping = true;
      clearTimeout(first);
      clearInterval(every);
      await running;
    },
  };
}
