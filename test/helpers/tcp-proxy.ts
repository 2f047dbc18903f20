/**
 * A TCP proxy between a client under test and a real server (PostgreSQL): what each connection carries
 * passes through `pass`, which forwards it (the default), holds it or cuts the connection, as a network
 * between them could.
 */
import { connect, createServer, type Socket } from 'node:net';

export type Direction = 'to-server' | 'to-client';

/** One proxied connection: the client's socket, the one to the server, and closing both. */
export interface ProxiedConnection {
  client: Socket;
  upstream: Socket;
  close(): void;
}

export type Pass = (chunk: Buffer, to: Socket, direction: Direction, connection: ProxiedConnection) => void;

/** Listens on 127.0.0.1 for `target`'s host and port; `url` is `target` pointed at the proxy. */
export async function startTcpProxy(
  target: URL,
  pass: Pass = (chunk, to) => void to.write(chunk),
): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    const connection: ProxiedConnection = {
      client,
      upstream,
      close: () => {
        client.destroy();
        upstream.destroy();
      },
    };
    client.on('data', (chunk: Buffer) => pass(chunk, upstream, 'to-server', connection));
    upstream.on('data', (chunk: Buffer) => pass(chunk, client, 'to-client', connection));
    client.on('error', connection.close).on('close', connection.close);
    upstream.on('error', connection.close).on('close', connection.close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as { port: number }).port);
  return {
    url: url.toString(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
