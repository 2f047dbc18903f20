/**
 * A bulk publish refused without naming its entries. daprd answers a refused bulk publish with the entries
 * the broker refused (`failedEntries`); every entry it does not name was written. An answer that names none of
 * the request's entries (an empty list, entries without ids) says nothing of what was written: it was taken
 * for "all written", and the relay would have marked unsent events published (lost). A server speaking the
 * sidecar's bulk publish API stands in for a daprd answering so.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { DaprPublisher } from '../../src/bus/dapr/index.ts';
import { PartialPublishError } from '../../src/bus/types.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { taskCreated } from '../helpers/events.ts';

describe('a Dapr bulk publish refused without naming its entries', () => {
  let server: Server;
  let port = 0;
  let answer: unknown;
  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const messages = ['u1', 'u2', 'u3'].map((user) => ({
    topic: 'task-events',
    key: user,
    event: taskCreated(user, `${user} #1`),
  }));

  for (const [what, body] of [
    ['an empty list', { errorCode: 'ERR_PUBSUB_PUBLISH_MESSAGE', failedEntries: [] }],
    ['entries without ids', { errorCode: 'ERR_PUBSUB_PUBLISH_MESSAGE', failedEntries: [{ error: 'x' }] }],
  ] as const)
    it(`is a failure of the whole request, none taken as written (${what})`, async () => {
      answer = body;
      const publisher = new DaprPublisher(
        { httpPort: port, pubsubName: 'pubsub', publishTimeoutMs: 5_000 },
        silentLogger,
      );
      const err = await publisher.publish(messages).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof Error, 'the publish fails');
      if (err instanceof PartialPublishError) assert.deepEqual(err.written, [], 'none taken as written');
      await publisher.close();
    });
});
