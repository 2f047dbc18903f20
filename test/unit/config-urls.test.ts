/**
 * PUBLIC_URL is the address people and MCP clients use (links, OAuth metadata); INTERNAL_URL, when set, is
 * where this process reaches the deployment's API for MCP tools of targets that run elsewhere (compose: its
 * router, since `localhost` inside a container is the container). Ports are TCP ports.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.ts';
import { gatewayManifest } from '../../src/services/gateway/manifest.ts';
import { notificationsManifest } from '../../src/services/notifications/manifest.ts';

const base = { DATABASE_URL: 'memory://', JWT_SECRET: 'x'.repeat(32) };

describe('the deployment addresses', () => {
  it('reaches the API at PUBLIC_URL when INTERNAL_URL is not set', () => {
    const c = loadConfig({ ...base, PUBLIC_URL: 'https://tasks.example.test/' });
    assert.equal(c.publicUrl, 'https://tasks.example.test');
    assert.equal(c.apiUrl, 'https://tasks.example.test');
  });

  it('reaches the API at INTERNAL_URL when set, and keeps PUBLIC_URL for links', () => {
    const c = loadConfig({ ...base, PUBLIC_URL: 'http://localhost:8080', INTERNAL_URL: 'http://edge:8080/' });
    assert.equal(c.publicUrl, 'http://localhost:8080');
    assert.equal(c.apiUrl, 'http://edge:8080');
  });

  it('takes {target} in INTERNAL_URL (each target its own address) and refuses what is no base URL', () => {
    assert.equal(
      loadConfig({ ...base, INTERNAL_URL: 'http://taskflow-{target}:80/' }).apiUrl,
      'http://taskflow-{target}:80',
    );
    for (const [name, value] of [
      ['INTERNAL_URL', 'taskflow-api:3000'],
      ['INTERNAL_URL', 'ftp://edge'],
      ['PUBLIC_URL', 'https://tasks.example.test/?x=1'],
      ['PUBLIC_URL', 'http://{target}.example.test'],
      ['PUBLIC_URL', 'tasks.example.test'],
    ] as const)
      assert.throws(
        () => loadConfig({ ...base, [name]: value }),
        new RegExp(`${name} must be an http\\(s\\) base URL`),
        `${name}=${value}`,
      );
  });

  it('has neither when neither is set (tools of targets elsewhere refuse clearly)', () => {
    const c = loadConfig(base);
    assert.equal(c.publicUrl, null);
    assert.equal(c.apiUrl, null);
  });
});

describe('ports', () => {
  it('refuses PORT and DAPR_HTTP_PORT past 65535, naming the variable', () => {
    assert.throws(() => loadConfig({ ...base, PORT: '70000' }), /PORT must be a TCP port from 0 to 65535/);
    assert.throws(
      () => loadConfig({ ...base, BUS: 'dapr', DAPR_HTTP_PORT: '70000' }),
      /DAPR_HTTP_PORT must be a TCP port from 1 to 65535, got "70000"/,
    );
    assert.equal(loadConfig({ ...base, PORT: '65535' }).port, 65_535);
  });
});

describe('timer settings', () => {
  it('refuses a delay longer than a Node timer takes (it fired at once, in a loop), naming the variable', async () => {
    const { auditManifest } = await import('../../src/services/audit/manifest.ts');
    assert.throws(
      () => auditManifest.config({ AUDIT_RETENTION_INTERVAL_MS: '3000000000' }),
      /AUDIT_RETENTION_INTERVAL_MS must be at most 2147483647 \(about 24.8 days, the longest timer\)/,
    );
    assert.throws(
      () => loadConfig({ ...base, EMBEDDED_POLL_MS: '2147483648' }),
      /EMBEDDED_POLL_MS must be at most/,
    );
    assert.equal(auditManifest.config({ AUDIT_RETENTION_INTERVAL_MS: '0' }).retentionIntervalMs, 0);
  });
});

describe('DATABASE_URL', () => {
  const jwt = { JWT_SECRET: 'x'.repeat(32) };
  it('takes PostgreSQL in any case of its scheme, memory:// and a directory', () => {
    assert.equal(loadConfig({ ...jwt, DATABASE_URL: 'POSTGRES://u@db/x' }).databaseUrl, 'postgres://u@db/x');
    assert.equal(
      loadConfig({ ...jwt, DATABASE_URL: 'postgresql://u@db/x' }).databaseUrl,
      'postgresql://u@db/x',
    );
    assert.equal(loadConfig({ ...jwt, DATABASE_URL: 'memory://' }).databaseUrl, 'memory://');
    // libpq's socket form, without a host.
    const socket = 'postgres://postgres@/tasks?host=/run/postgresql&port=5432';
    assert.equal(loadConfig({ ...jwt, DATABASE_URL: socket }).databaseUrl, socket);
    assert.equal(
      loadConfig({ ...jwt, DATABASE_URL: 'FILE:///tmp/not-there-yet/db' }).databaseUrl,
      'file:///tmp/not-there-yet/db',
    );
    assert.equal(
      loadConfig({ ...jwt, DATABASE_URL: '/tmp/not-there-yet/db' }).databaseUrl,
      '/tmp/not-there-yet/db',
    );
  });

  it('refuses another scheme, white space, a bad URL or a file: each became a new local database', () => {
    for (const [value, message] of [
      ['postgress://u@db/x', /DATABASE_URL must be postgres/],
      ['mysql://x@y/z', /DATABASE_URL must be postgres/],
      [' postgres://u@db/x', /white space/],
      ['postgres://x@[bad', /not a valid URL/],
      ['/etc/passwd', /names \/etc\/passwd, which is not a directory/],
    ] as const)
      assert.throws(
        () => loadConfig({ ...jwt, DATABASE_URL: value }),
        (e: Error) => e.name === 'ConfigError' && message.test(e.message),
        value,
      );
  });

  it('names a TLS file it cannot read', () => {
    assert.throws(
      () => loadConfig({ ...jwt, DATABASE_URL: 'memory://', KAFKA_SSL_CA_FILE: '/nonexistent/ca.pem' }),
      (e: Error) =>
        e.name === 'ConfigError' &&
        /KAFKA_SSL_CA_FILE: cannot read \/nonexistent\/ca.pem \(ENOENT\)/.test(e.message),
    );
  });

  it('refuses a JWT_JWKS_URL that is not an http(s) URL at start, naming it (it was "Invalid URL" after migrating)', () => {
    for (const value of ['keycloak.example.com/realms/app/protocol/openid-connect/certs', 'ftp://idp/jwks'])
      assert.throws(
        () => loadConfig({ DATABASE_URL: 'memory://', JWT_JWKS_URL: value }),
        (e: Error) => e.name === 'ConfigError' && /JWT_JWKS_URL must be an http\(s\) URL/.test(e.message),
        value,
      );
    assert.equal(
      loadConfig({ DATABASE_URL: 'memory://', JWT_JWKS_URL: 'https://idp.example.test/jwks.json' }).jwt
        .jwksUrl,
      'https://idp.example.test/jwks.json',
    );
  });

  it('holds GATEWAY_TICKET_SECRET to 32 bytes, as JWT_SECRET (both sign credentials)', () => {
    assert.throws(
      () => gatewayManifest.config({ GATEWAY_TICKET_SECRET: 'secret' }),
      (e: Error) =>
        e.name === 'ConfigError' && /GATEWAY_TICKET_SECRET must be at least 32 bytes/.test(e.message),
    );
    assert.equal(
      gatewayManifest.config({ GATEWAY_TICKET_SECRET: 't'.repeat(32) }).ticketSecret,
      't'.repeat(32),
    );
  });
});

describe('SMTP_URL', () => {
  it('refuses what nodemailer misreads (another host, localhost, a password cut at its #) at start, naming it without the password', () => {
    for (const value of [
      'mail.example.com:587', // nodemailer: the host 0.0.2.75
      'smtp//mail.example.com:587', // localhost:587
      'http://mail.example.com',
      'smtp://mailer:Smtp#S3cret@127.0.0.1:2525', // "Invalid URL" after migrating
      'smtp://mailer:25#S3cret@mail.example.com', // the host "mailer", port 25
      'smtp://mailer:25/S3cret@mail.example.com',
    ])
      assert.throws(
        () => notificationsManifest.config({ SMTP_URL: value }),
        (e: Error) =>
          e.name === 'ConfigError' &&
          /^SMTP_URL must be smtp:\/\/user:password@host:port or smtps:\/\/.*percent-encoded.*# as %23/.test(
            e.message,
          ) &&
          !e.message.includes('S3cret'),
        value,
      );
  });

  it('takes smtp:// and smtps:// URLs, a password percent-encoded, nodemailer options after ?', () => {
    for (const value of [
      'smtp://mailer:Smtp%23S3cret@mail.example.com:587',
      'smtps://mail.example.com',
      'smtp://[::1]:2525/?pool=true',
    ])
      assert.equal(notificationsManifest.config({ SMTP_URL: value }).smtpUrl, value);
    assert.equal(notificationsManifest.config({}).smtpUrl, null);
  });
});

describe('SCHEMA_REGISTRY_URL', () => {
  it('moves a user and password out of the URL into the Basic auth (fetch refuses them in the URL)', () => {
    const registry = loadConfig({
      ...base,
      SCHEMA_REGISTRY_URL: 'https://svc-account:Registry%40S3cret@registry.example.test/ccompat/',
    }).schemaRegistry!;
    assert.equal(registry.url, 'https://registry.example.test/ccompat/');
    assert.equal(registry.username, 'svc-account');
    assert.equal(registry.password, 'Registry@S3cret');
  });

  it('refuses other credentials in SCHEMA_REGISTRY_USERNAME/PASSWORD, or a password cut at its #, without printing it', () => {
    for (const env of [
      { SCHEMA_REGISTRY_URL: 'https://svc:S3cret@registry.example.test', SCHEMA_REGISTRY_PASSWORD: 'other' },
      { SCHEMA_REGISTRY_URL: 'https://svc:S3cret#x@registry.example.test' },
      { SCHEMA_REGISTRY_URL: 'https://svc:8081#S3cret@registry.example.test' },
      { SCHEMA_REGISTRY_URL: 'registry.example.test:8081' },
    ])
      assert.throws(
        () => loadConfig({ ...base, ...env }),
        (e: Error) =>
          e.name === 'ConfigError' &&
          /^SCHEMA_REGISTRY_URL /.test(e.message) &&
          !e.message.includes('S3cret'),
        env.SCHEMA_REGISTRY_URL,
      );
  });
});
