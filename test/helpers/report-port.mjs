/**
 * Preloaded (`--import`) into the servers the tests start (processes.ts startServer): tells the test, over
 * the IPC channel, which port the HTTP server is listening on. The server binds port 0, so no other process
 * can take its port between a pick and the bind, and the test never polls a server that is not its own.
 */
import { Server } from 'node:net';

const listen = Server.prototype.listen;
Server.prototype.listen = function (...args) {
  this.once('listening', () => {
    const address = this.address();
    if (address && typeof address === 'object') process.send?.({ listening: address.port });
  });
  return listen.apply(this, args);
};
// The channel must not keep the server alive once it is done.
process.channel?.unref();
