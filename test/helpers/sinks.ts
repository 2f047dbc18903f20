/**
 * Real receivers for the notification channels, on 127.0.0.1 with ephemeral ports: an SMTP server
 * (smtp-server), a webhook HTTP server, and a Web Push service (HTTPS with a self-signed certificate made by
 * openssl) that checks the VAPID JWT and decrypts the aes128gcm payload as a browser would (RFC 8291).
 */
import { execFileSync } from 'node:child_process';
import { createECDH, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { Agent, createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importJWK, jwtVerify } from 'jose';
import { SMTPServer } from 'smtp-server';

const readBody = (req: IncomingMessage) =>
  new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });

const listen = (server: Server | SMTPServer['server']) =>
  new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );

export interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
}

export async function startSmtpSink(): Promise<{
  url: string;
  mails: ReceivedMail[];
  /** Recipients refused (550) while they are in it: a mail server that does not take a message. */
  refused: Set<string>;
  close(): Promise<void>;
}> {
  const mails: ReceivedMail[] = [];
  const refused = new Set<string>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo(address, _session, callback) {
      if (refused.has(address.address))
        return callback(Object.assign(new Error('mailbox unavailable'), { responseCode: 550 }));
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.server.address() as AddressInfo).port)),
  );
  return {
    url: `smtp://127.0.0.1:${port}`,
    mails,
    refused,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface ReceivedRequest {
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  status: number;
}

/**
 * An HTTP server that records every request; `respond(path, n)` picks the status of the n-th call (1-based),
 * and headers of the answer if it likes.
 */
export async function startWebhookSink(
  respond: (path: string, nth: number) => number | { status: number; headers: Record<string, string> } = () =>
    200,
): Promise<{ url: string; calls: ReceivedRequest[]; close(): Promise<void> }> {
  const calls: ReceivedRequest[] = [];
  const counts = new Map<string, number>();
  const server = createHttpServer(async (req, res) => {
    const body = (await readBody(req)).toString('utf8');
    const path = req.url ?? '/';
    const nth = (counts.get(path) ?? 0) + 1;
    counts.set(path, nth);
    const answer = respond(path, nth);
    const { status, headers } = typeof answer === 'number' ? { status: answer, headers: {} } : answer;
    calls.push({ path, headers: req.headers, body, status });
    res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(status < 300 ? 'ok' : 'nope');
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A browser-side push subscription: its ECDH key pair and auth secret. */
export interface PushClient {
  endpoint: string;
  keys: { p256dh: string; auth: string };
  decrypt(body: Buffer): string;
}

export interface PushServiceSink {
  origin: string;
  /** Trusts the self-signed certificate (give it to the push channel). */
  agent: Agent;
  calls: (ReceivedRequest & { raw: Buffer })[];
  /** A subscription whose endpoint is on this service; `status` is what the service answers for it. */
  subscribe(name: string, status?: number): PushClient;
  /** Checks the `Authorization: vapid t=<jwt>, k=<key>` header against the VAPID public key; returns the claims. */
  verifyVapid(authorization: string | undefined, publicKey: string): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

const b64u = (b: Buffer) => b.toString('base64url');

/** A self-signed certificate (P-256) for 127.0.0.1: a local TLS server that a test's agent trusts. */
export function selfSignedCertificate(): { cert: Buffer; key: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    return { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function startPushService(): Promise<PushServiceSink> {
  const { cert, key } = selfSignedCertificate();
  const statuses = new Map<string, number>();
  const calls: PushServiceSink['calls'] = [];
  const server = createHttpsServer({ key, cert }, async (req, res) => {
    const raw = await readBody(req);
    const path = req.url ?? '/';
    // As push services do (RFC 8030 section 7.2 sets 4096 bytes as the least they take; FCM and autopush no more).
    const status = raw.length > 4096 ? 413 : (statuses.get(path) ?? 201);
    calls.push({ path, headers: req.headers, body: '', raw, status });
    res.writeHead(status).end();
  });
  const port = await listen(server as unknown as Server);
  const origin = `https://127.0.0.1:${port}`;
  return {
    origin,
    agent: new Agent({ ca: cert }),
    calls,
    subscribe(name, status = 201) {
      const ecdh = createECDH('prime256v1');
      ecdh.generateKeys();
      const auth = randomBytes(16);
      const path = `/push/${name}`;
      statuses.set(path, status);
      const uaPublic = ecdh.getPublicKey();
      return {
        endpoint: origin + path,
        keys: { p256dh: b64u(uaPublic), auth: b64u(auth) },
        // RFC 8291 / RFC 8188 (aes128gcm, one record), as the browser does it.
        decrypt(body) {
          const salt = body.subarray(0, 16);
          const idlen = body[20]!;
          const asPublic = body.subarray(21, 21 + idlen);
          const ciphertext = body.subarray(21 + idlen);
          const secret = ecdh.computeSecret(asPublic);
          const info = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, asPublic]);
          const ikm = Buffer.from(hkdfSync('sha256', secret, auth, info, 32));
          const cek = Buffer.from(
            hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16),
          );
          const nonce = Buffer.from(
            hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12),
          );
          const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
          decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
          const plain = Buffer.concat([
            decipher.update(ciphertext.subarray(0, ciphertext.length - 16)),
            decipher.final(),
          ]);
          let end = plain.length - 1;
          while (end >= 0 && plain[end] === 0) end--;
          if (plain[end] !== 2) throw new Error('bad padding delimiter (expected the last record)');
          return plain.subarray(0, end).toString('utf8');
        },
      };
    },
    async verifyVapid(authorization, publicKey) {
      const m = /^vapid t=([^,]+),\s*k=(.+)$/.exec(authorization ?? '');
      if (!m) throw new Error(`not a VAPID authorization header: ${authorization}`);
      if (m[2] !== publicKey) throw new Error('the k= key is not the VAPID public key');
      const point = Buffer.from(publicKey, 'base64url');
      const jwk = {
        kty: 'EC',
        crv: 'P-256',
        x: b64u(point.subarray(1, 33)),
        y: b64u(point.subarray(33, 65)),
      };
      const { payload } = await jwtVerify(m[1]!, await importJWK(jwk, 'ES256'));
      return payload as Record<string, unknown>;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
