/**
 * loopbackPeerUid (src/http/peer.ts): the owner of a loopback connection's other end, read from the kernel's
 * tables of TCP sockets, as development sign-in uses it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loopbackPeerUid } from '../../src/http/peer.ts';

const HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
// The server listens on 3000 (0BB8); a client of uid 1000 connects from port 50000 (C350), one of uid 0 from
// 50001 (C351) over IPv6.
const TCP =
  HEADER +
  '   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n' +
  '   1: 0100007F:C350 0100007F:0BB8 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n' +
  '   2: 0100007F:0BB8 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n';
const TCP6 =
  HEADER +
  '   0: 00000000000000000000000001000000:C351 00000000000000000000000001000000:0BB8 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1\n';
const tables = (tcp: string, tcp6?: string) => (path: string) => {
  if (path.endsWith('tcp')) return tcp;
  if (tcp6 === undefined) throw new Error('ENOENT');
  return tcp6;
};

describe('loopbackPeerUid', { skip: process.platform !== 'linux' ? 'reads Linux tables' : false }, () => {
  it("finds the uid of the client's socket, not the server's side of the same connection", () => {
    assert.equal(loopbackPeerUid({ remotePort: 50000, localPort: 3000 }, tables(TCP, TCP6)), 1000);
  });
  it('reads the IPv6 table too, and does without it', () => {
    assert.equal(loopbackPeerUid({ remotePort: 50001, localPort: 3000 }, tables(TCP, TCP6)), 0);
    assert.equal(loopbackPeerUid({ remotePort: 50000, localPort: 3000 }, tables(TCP)), 1000);
  });
  it('is null when no socket matches, or sockets of two uids do', () => {
    assert.equal(loopbackPeerUid({ remotePort: 40000, localPort: 3000 }, tables(TCP, TCP6)), null);
    assert.equal(loopbackPeerUid({ localPort: 3000 }, tables(TCP, TCP6)), null);
    const twice = TCP + TCP.split('\n')[2]!.replace(' 1000 ', ' 1001 ') + '\n';
    assert.equal(loopbackPeerUid({ remotePort: 50000, localPort: 3000 }, tables(twice)), null);
  });
});
