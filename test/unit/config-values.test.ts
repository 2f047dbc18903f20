/**
 * Settings an operator gets wrong are refused at start, naming the variable and the form it takes: a value
 * taken as it was got a target that started and then retried forever (a malformed broker list, a topic prefix
 * Kafka refuses), a 500 at the first request (an unknown default time zone), or another meaning (`KAFKA_SSL=yes`
 * read as plaintext).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.ts';

const base = { DATABASE_URL: 'memory://', JWT_SECRET: 'x'.repeat(32) };
const sasl = { KAFKA_SASL_MECHANISM: 'PLAIN', KAFKA_SASL_USERNAME: 'app', KAFKA_SASL_PASSWORD: 'pw' };

describe('settings refused at start', () => {
  it('KAFKA_BROKERS: host:port pairs joined by commas', () => {
    for (const brokers of [
      'kafka://127.0.0.1:9092',
      '127.0.0.1:9092;127.0.0.1:9093',
      ' , ',
      'kafka',
      'k:0',
      'k:70000',
    ])
      assert.throws(
        () => loadConfig({ ...base, KAFKA_BROKERS: brokers }),
        /KAFKA_BROKERS must .*host:port/,
        brokers,
      );
    assert.deepEqual(
      loadConfig({ ...base, KAFKA_BROKERS: 'kafka-0:9092, 10.0.0.2:9093,[::1]:9094' }).kafka.brokers,
      ['kafka-0:9092', '10.0.0.2:9093', '[::1]:9094'],
    );
  });

  it('EMBEDDED_SESSION_TIMEOUT_MS: at least two heartbeats (EMBEDDED_HEARTBEAT_MS)', () => {
    assert.throws(
      () => loadConfig({ ...base, EMBEDDED_HEARTBEAT_MS: '5000', EMBEDDED_SESSION_TIMEOUT_MS: '5000' }),
      /EMBEDDED_SESSION_TIMEOUT_MS \(5000\) must be at least twice EMBEDDED_HEARTBEAT_MS \(5000\)/,
    );
    assert.throws(() => loadConfig({ ...base, EMBEDDED_HEARTBEAT_MS: '6000' }), /at least twice/);
    const ok = loadConfig({ ...base, EMBEDDED_HEARTBEAT_MS: '5000', EMBEDDED_SESSION_TIMEOUT_MS: '10000' });
    assert.deepEqual(ok.embedded, {
      pollIntervalMs: 2000,
      heartbeatIntervalMs: 5000,
      sessionTimeoutMs: 10_000,
    });
  });

  it('KAFKA_TOPIC_PARTITIONS: 1 to 256 (100,000 grew the embedded topics for good, and `up` never got ready)', () => {
    for (const partitions of ['0', '257', '100000', '2.5'])
      assert.throws(
        () => loadConfig({ ...base, KAFKA_TOPIC_PARTITIONS: partitions }),
        /KAFKA_TOPIC_PARTITIONS must be a whole number from 1 to 256/,
        partitions,
      );
    assert.equal(loadConfig({ ...base, KAFKA_TOPIC_PARTITIONS: '256' }).kafka.topicPartitions, 256);
  });

  it('KAFKA_TOPIC_PREFIX: what Kafka takes in a topic name', () => {
    assert.throws(
      () => loadConfig({ ...base, KAFKA_TOPIC_PREFIX: 'walk ops/' }),
      /KAFKA_TOPIC_PREFIX may hold only/,
    );
    assert.equal(loadConfig({ ...base, KAFKA_TOPIC_PREFIX: 'staging_1.' }).kafka.topicPrefix, 'staging_1.');
  });

  it('DEFAULT_TIMEZONE: an IANA zone, spelt as IANA does', () => {
    for (const zone of ['Mars/Olympus', '+02:00'])
      assert.throws(
        () => loadConfig({ ...base, DEFAULT_TIMEZONE: zone }),
        /DEFAULT_TIMEZONE must be an IANA/,
        zone,
      );
    assert.equal(loadConfig({ ...base, DEFAULT_TIMEZONE: 'europe/paris' }).defaultTimezone, 'Europe/Paris');
    assert.equal(loadConfig(base).defaultTimezone, 'UTC');
  });

  it('LOG_LEVEL: one of the logger levels', () => {
    assert.throws(
      () => loadConfig({ ...base, LOG_LEVEL: 'verbose' }),
      /LOG_LEVEL must be one of fatal, error/,
    );
    assert.equal(loadConfig({ ...base, LOG_LEVEL: 'debug' }).logLevel, 'debug');
  });

  it('KAFKA_SASL_MECHANISM: with its KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (it signed in as "")', () => {
    for (const mechanism of ['PLAIN', 'scram-sha-256', 'SCRAM-SHA-512']) {
      assert.throws(
        () => loadConfig({ ...base, KAFKA_SASL_MECHANISM: mechanism }),
        /KAFKA_SASL_MECHANISM=[A-Z0-9-]+ needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD/,
        mechanism,
      );
      assert.throws(
        () => loadConfig({ ...base, KAFKA_SASL_MECHANISM: mechanism, KAFKA_SASL_PASSWORD: 'pw' }),
        (e: Error) => e.name === 'ConfigError' && /needs KAFKA_SASL_USERNAME \(/.test(e.message),
        mechanism,
      );
      assert.throws(
        () =>
          loadConfig({
            ...base,
            KAFKA_SASL_MECHANISM: mechanism,
            KAFKA_SASL_USERNAME: 'app',
            KAFKA_SASL_PASSWORD: '',
          }),
        /needs KAFKA_SASL_PASSWORD \(unset or empty\)/,
        mechanism,
      );
    }
    assert.deepEqual(loadConfig({ ...base, ...sasl }).kafka.sasl, {
      mechanism: 'PLAIN',
      username: 'app',
      password: 'pw',
    });
  });

  it('true/false switches: anything else is refused, not read as false', () => {
    for (const key of ['KAFKA_SSL', 'KAFKA_ENSURE_TOPICS', 'KAFKA_SSL_REJECT_UNAUTHORIZED'])
      assert.throws(
        () => loadConfig({ ...base, KAFKA_SSL_CA_FILE: import.meta.filename, [key]: 'yes' }),
        new RegExp(`${key} must be true or false`),
      );
    assert.ok(loadConfig({ ...base, KAFKA_SSL: 'true' }).kafka.ssl);
    assert.equal(loadConfig({ ...base, ...sasl, KAFKA_SSL: 'false' }).kafka.ssl, undefined);
    assert.ok(loadConfig({ ...base, ...sasl }).kafka.ssl, 'SASL turns TLS on by default');
    assert.equal(loadConfig({ ...base, KAFKA_ENSURE_TOPICS: 'false' }).kafka.ensureTopics, false);
  });

  it('CONSUMER_RETRY_BASE_MS: not more than CONSUMER_RETRY_MAX_MS (it started, each retry waiting the longest)', () => {
    assert.throws(
      () => loadConfig({ ...base, CONSUMER_RETRY_BASE_MS: '20000', CONSUMER_RETRY_MAX_MS: '100' }),
      /CONSUMER_RETRY_BASE_MS \(20000\) must not be more than CONSUMER_RETRY_MAX_MS \(100\)/,
    );
    assert.equal(
      loadConfig({ ...base, CONSUMER_RETRY_BASE_MS: '100', CONSUMER_RETRY_MAX_MS: '100' }).retry.maxDelayMs,
      100,
    );
    // The maximum alone, shorter than the base's default (or 0: no wait), is taken as it was.
    for (const max of ['100', '0'])
      assert.deepEqual(
        (({ baseDelayMs, maxDelayMs }) => [baseDelayMs, maxDelayMs])(
          loadConfig({ ...base, CONSUMER_RETRY_MAX_MS: max }).retry,
        ),
        [Number(max), Number(max)],
      );
  });
});

describe('settings a start warns of', () => {
  it('LEDGER_RETENTION_MS shorter than the longest topic retention (it started without a word)', () => {
    const [warning, ...more] = loadConfig({ ...base, LEDGER_RETENTION_MS: '60000' }).warnings;
    assert.match(warning ?? '', /^LEDGER_RETENTION_MS \(60000\) is shorter than the longest topic retention/);
    assert.deepEqual(more, []);
    assert.deepEqual(loadConfig(base).warnings, []);
    // Shorter topics (a dead letter replayed goes back to its topic: the dead-letter topics count too).
    const short = {
      ...base,
      KAFKA_TOPIC_RETENTION_MS: 'task-events=3600000,reminders=3600000,task-updates=3600000,dlq=3600000',
    };
    assert.deepEqual(loadConfig({ ...short, LEDGER_RETENTION_MS: String(2 * 3_600_000) }).warnings, []);
  });
});
