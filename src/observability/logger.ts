/** Structured JSON logs (pino); `LOG_LEVEL` sets the level. Tokens and secrets are redacted. */
import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export function createLogger(opts: { level?: string; name?: string; fd?: 1 | 2 } = {}): Logger {
  const options: LoggerOptions = {
    name: opts.name ?? 'taskflow',
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    redact: {
      paths: ['req.headers.authorization', 'req.headers["sec-websocket-protocol"]', '*.password', '*.token'],
      censor: '[redacted]',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // fd 2: stdout carries a protocol (the MCP stdio server), so the logs go to stderr.
  return opts.fd === 2 ? pino(options, pino.destination(2)) : pino(options);
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = pino({ level: 'silent' });
