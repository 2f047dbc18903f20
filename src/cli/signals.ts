/**
 * Until a command stops gracefully on a signal (serve once started, tail, mcp), a signal ends the process at
 * once, as it would by default: as PID 1 in a container (no init) a signal without a handler is ignored, so a
 * pod starting (waiting for the migrations' lock, say) or running `migrate` waited for SIGKILL at the end of its
 * grace period. Nothing is lost: what a process did not finish is redone, as after a crash.
 */
import { constants } from 'node:os';

const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;

const exitOnSignal = (signal: NodeJS.Signals) => process.exit(128 + (constants.signals[signal] ?? 0));

/** Makes SIGTERM and SIGINT end the process at once (the CLI's start). */
export function exitOnStopSignals(): void {
  for (const signal of STOP_SIGNALS) process.on(signal, exitOnSignal);
}

/**
 * Replaces the immediate exit on SIGTERM and SIGINT by the command's own stop, called at each signal (`stop`
 * ignores a repeat): with a handler left in place a second Ctrl-C or a re-sent SIGTERM does not cut the
 * graceful stop short (`once` restored the default action after the first).
 */
export function onStopSignal(stop: (signal: NodeJS.Signals) => void): void {
  for (const signal of STOP_SIGNALS) {
    process.off(signal, exitOnSignal);
    process.on(signal, () => stop(signal));
  }
}
