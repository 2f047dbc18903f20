/**
 * Structured logs (pino). Tokens and secrets are redacted. Format (config `LOG_FORMAT`): `json` (one JSON
 * object per line, for collectors), `pretty` (one coloured line per entry, for people), or unset: pretty when
 * the logs go to a terminal, JSON otherwise.
 */
import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export type LogFormat = 'json' | 'pretty';

export function createLogger(
  opts: { level?: string; name?: string; fd?: 1 | 2; format?: LogFormat } = {},
): Logger {
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
  const fd = opts.fd ?? 1;
  const format = opts.format ?? (isatty(fd) ? 'pretty' : 'json');
  return pino(options, format === 'pretty' ? prettyStream(fd) : pino.destination(fd));
}

/** pino-pretty in this thread (no transport worker), loaded only when used. */
function prettyStream(fd: 1 | 2): DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream;
  return pretty({
    destination: fd,
    sync: true,
    colorize: isatty(fd),
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    singleLine: true,
  });
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = pino({ level: 'silent' });
