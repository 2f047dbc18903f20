/** Picks the transport from `BUS`. */
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Db } from '../store/db.ts';
import { createEmbeddedBus } from './embedded/index.ts';
import type { Bus } from './types.ts';

export async function createBus(config: Config, db: Db, log: Logger, _metrics: Metrics): Promise<Bus> {
  switch (config.bus) {
    case 'embedded':
      return createEmbeddedBus(db, {
        log: log.child({ component: 'bus' }),
        retry: config.retry,
        pollIntervalMs: config.embedded.pollIntervalMs,
        heartbeatIntervalMs: config.embedded.heartbeatIntervalMs,
        sessionTimeoutMs: config.embedded.sessionTimeoutMs,
      });
    case 'kafka':
    case 'dapr':
      throw new Error(`BUS=${config.bus} is not available in this build yet`);
  }
}
