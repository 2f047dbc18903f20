/**
 * The deployment artefacts, checked offline with the real tools: the Helm chart through `helm lint` and
 * `helm template` (scripts/helm builds helm from source), every rendered object strictly decoded into the
 * Kubernetes API types (tools/kubevalidate via scripts/kube-validate), the Dapr components, the Dockerfile
 * through BuildKit's parser and lint rules, and deploy/compose.yaml through compose-go (the compose-spec
 * loader of `docker compose`). No image is built and no cluster is involved.
 *
 * Both tools are built once with Go and cached in .cache/ (minutes when the Go build cache is cold, then
 * instant). Without a Go toolchain the suite is skipped, unless HELM and KUBEVALIDATE name prebuilt binaries
 * (or REQUIRE_DEPLOY_TOOLS=1 makes that a failure).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { TARGETS } from '../../src/services/index.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHART = join(ROOT, 'deploy', 'helm', 'taskflow');
const TARGET_NAMES = TARGETS.map((t) => t.name);
const CONSUMERS = ['reminders', 'recurrence', 'notifications', 'audit'];
const RELEASE = 'taskflow';
const NAMESPACE = 'taskflow';

const hasGo = spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0;
const prebuilt = !!process.env.HELM && !!process.env.KUBEVALIDATE;
// REQUIRE_DEPLOY_TOOLS=1 (CI): never skip, so a missing toolchain fails loudly.
const skip =
  hasGo || prebuilt || process.env.REQUIRE_DEPLOY_TOOLS === '1'
    ? false
    : 'needs a Go toolchain to build helm and tools/kubevalidate (scripts/helm, scripts/kube-validate), or HELM and KUBEVALIDATE set to prebuilt binaries';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input?: string, env: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync(cmd, args, {
    cwd: ROOT,
    input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, ...env },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Builds (or finds in .cache/) a tool through its script; the script prints the binary's path. */
function fetchTool(script: string): string {
  const r = run(join(ROOT, 'scripts', script), ['fetch']);
  assert.equal(r.status, 0, `scripts/${script} fetch failed:\n${r.stderr}`);
  return r.stdout.trim().split('\n').pop()!;
}

let helmBin = '';
let kubevalidateBin = '';
let scratch = '';
const helmEnv = () => ({
  HELM_CACHE_HOME: join(scratch, 'helm', 'cache'),
  HELM_CONFIG_HOME: join(scratch, 'helm', 'config'),
  HELM_DATA_HOME: join(scratch, 'helm', 'data'),
});

function helm(args: string[]): Run {
  return run(helmBin, args, undefined, helmEnv());
}

function helmTemplate(valueArgs: string[]): string {
  const r = helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, ...valueArgs]);
  assert.equal(r.status, 0, `helm template ${valueArgs.join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

/** tools/kubevalidate with --json: the parsed result, and the exit status. */
function kubevalidate(
  args: string[],
  input?: string,
): { status: number | null; result: any; stderr: string } {
  const r = run(kubevalidateBin, [args[0]!, '--json', ...args.slice(1)], input);
  let result: any = null;
  try {
    result = JSON.parse(r.stdout);
  } catch {
    assert.fail(`kubevalidate ${args.join(' ')} printed no JSON (status ${r.status}):\n${r.stderr}`);
  }
  return { status: r.status, result, stderr: r.stderr };
}

function validManifests(yaml: string, what: string): any[] {
  const { status, result } = kubevalidate(['k8s', '-'], yaml);
  assert.deepEqual(result.errors, [], `${what}: manifests do not validate`);
  assert.equal(status, 0);
  return result.objects.map((o: any) => o.object);
}

const byKind = (objs: any[], kind: string) => objs.filter((o) => o.kind === kind);
const named = (objs: any[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} is rendered`);
  return o;
};
const workloadKind = (target: string) => (target === 'gateway' ? 'StatefulSet' : 'Deployment');
const envOf = (container: any) => new Map<string, any>(container.env.map((e: any) => [e.name, e]));
const valueFile = (name: string) => ['-f', join(CHART, name)];

interface Scenario {
  name: string;
  args: string[];
  dapr: boolean;
  ingress: boolean;
  cloud: boolean;
}
/** The one value the default values lack (the chart refuses to render without a database). */
const DATABASE = ['--set', 'secrets.databaseUrl=postgres://taskflow:secret@postgres:5432/taskflow'];
const SCENARIOS: Scenario[] = [
  { name: 'default values', args: DATABASE, dapr: false, ingress: false, cloud: false },
  {
    name: 'values-minikube.yaml',
    args: valueFile('values-minikube.yaml'),
    dapr: false,
    ingress: true,
    cloud: false,
  },
  {
    name: 'values-minikube.yaml + dapr.enabled',
    args: [...valueFile('values-minikube.yaml'), '--set', 'dapr.enabled=true'],
    dapr: true,
    ingress: true,
    cloud: false,
  },
  {
    name: 'values-cloud.yaml + a schema registry',
    args: [
      ...valueFile('values-cloud.yaml'),
      '--set',
      'schemaRegistry.url=https://registry.example:8081',
      '--set',
      'schemaRegistry.existingSecret=registry-credentials',
      '--set',
      'schemaRegistry.eventEncoding=avro',
    ],
    dapr: false,
    ingress: true,
    cloud: true,
  },
  {
    name: 'values-cloud.yaml + dapr.enabled',
    args: [...valueFile('values-cloud.yaml'), '--set', 'dapr.enabled=true'],
    dapr: true,
    ingress: true,
    cloud: true,
  },
];

describe('deployment artefacts (offline: helm, Kubernetes API types, BuildKit, compose-go)', { skip }, () => {
  before(
    () => {
      scratch = mkdtempSync(join(tmpdir(), 'taskflow-deploy-'));
      helmBin = process.env.HELM || fetchTool('helm');
      kubevalidateBin = process.env.KUBEVALIDATE || fetchTool('kube-validate');
    },
    { timeout: 30 * 60_000 },
  );
  after(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('helm lint --strict passes with the default, Minikube and cloud values', () => {
    for (const s of SCENARIOS) {
      const r = helm(['lint', '--strict', CHART, '--namespace', NAMESPACE, ...s.args]);
      assert.equal(r.status, 0, `helm lint (${s.name}) failed:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  for (const s of SCENARIOS) {
    it(`helm template (${s.name}) renders valid objects: a Deployment per target (the gateway a StatefulSet) with probes, resources, security`, () => {
      const objs = validManifests(helmTemplate(s.args), s.name);
      const deployments = byKind(objs, 'Deployment');
      assert.deepEqual(
        deployments.map((d) => d.metadata.name).sort(),
        TARGET_NAMES.filter((t) => t !== 'gateway')
          .map((t) => `${RELEASE}-${t}`)
          .sort(),
      );
      // The gateway's consumer group is its pod's name: stable names keep the groups across rollouts.
      const gateway = named(objs, 'StatefulSet', `${RELEASE}-gateway`);
      assert.equal(gateway.spec.podManagementPolicy, 'Parallel');
      assert.equal(gateway.spec.updateStrategy.type, 'RollingUpdate');
      const governing = named(objs, 'Service', gateway.spec.serviceName);
      assert.equal(governing.spec.clusterIP, 'None');
      assert.equal(governing.spec.selector['app.kubernetes.io/component'], 'gateway');
      for (const target of TARGET_NAMES) {
        const d = named(objs, workloadKind(target), `${RELEASE}-${target}`);
        const pod = d.spec.template;
        assert.equal(pod.spec.containers.length, 1);
        const c = pod.spec.containers[0];
        assert.deepEqual(c.args, ['serve', target]);
        assert.doesNotMatch(c.image, /:latest$/);
        const env = envOf(c);
        const port = Number(env.get('PORT')?.value);
        assert.equal(env.get('HOST')?.value, '0.0.0.0');
        // X-Forwarded-For is trusted only from the chart's ingress: without it any pod could set it.
        assert.equal(env.get('TRUST_PROXY')?.value, s.ingress ? '1' : undefined);
        // The MCP tools and the chat of the api reach the other targets' Services directly.
        assert.equal(
          env.get('INTERNAL_URL')?.value,
          target === 'api' ? `http://${RELEASE}-{target}.${NAMESPACE}.svc:80` : undefined,
        );
        assert.deepEqual(c.ports, [{ name: 'http', containerPort: port, protocol: 'TCP' }]);
        assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'http' }, `${target} liveness`);
        assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'http' }, `${target} readiness`);
        assert.ok(c.resources.requests.cpu && c.resources.requests.memory, `${target} requests`);
        assert.ok(c.resources.limits.memory, `${target} memory limit`);
        // Non-root, read-only root file system with /tmp as emptyDir, no capabilities, seccomp.
        assert.equal(pod.spec.securityContext.runAsNonRoot, true);
        assert.ok(pod.spec.securityContext.runAsUser > 0);
        assert.equal(pod.spec.securityContext.seccompProfile.type, 'RuntimeDefault');
        assert.equal(c.securityContext.readOnlyRootFilesystem, true);
        assert.equal(c.securityContext.allowPrivilegeEscalation, false);
        assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
        const tmp = c.volumeMounts.find((m: any) => m.mountPath === '/tmp');
        assert.ok(
          pod.spec.volumes.find((v: any) => v.name === tmp?.name)?.emptyDir,
          `${target}: /tmp is an emptyDir`,
        );
        // Secrets only by reference.
        for (const key of ['DATABASE_URL', 'JWT_SECRET', 'KAFKA_BROKERS'])
          assert.ok(env.get(key)?.valueFrom?.secretKeyRef, `${target}: ${key} from a Secret`);
        for (const e of c.env)
          if (/PASSWORD|SECRET|DATABASE_URL/.test(e.name))
            assert.equal(e.value, undefined, `${target}: ${e.name} inline`);
        // Bus and Dapr sidecar.
        const ann = pod.metadata.annotations ?? {};
        assert.equal(env.get('BUS')?.value, s.dapr ? 'dapr' : 'kafka');
        if (s.dapr) {
          assert.equal(ann['dapr.io/enabled'], 'true');
          assert.equal(ann['dapr.io/app-id'], `taskflow-${target}`);
          assert.equal(ann['dapr.io/app-port'], String(port));
          assert.equal(ann['dapr.io/config'], 'taskflow');
          // No app health check: daprd 1.16's stop and restart of the subscriptions around an app restart
          // left a group consuming nothing (ADR 0006; dapr-restart.test.ts runs daprd as the chart does).
          assert.equal(ann['dapr.io/enable-app-health-check'], undefined);
          // The app and its sidecar authenticate each other: no other pod can post events to a consumer.
          assert.equal(ann['dapr.io/app-token-secret'], `${RELEASE}-dapr-token`);
          assert.equal(ann['dapr.io/api-token-secret'], `${RELEASE}-dapr-token`);
          for (const key of ['APP_API_TOKEN', 'DAPR_API_TOKEN'])
            assert.deepEqual(env.get(key)?.valueFrom?.secretKeyRef, {
              name: `${RELEASE}-dapr-token`,
              key: 'token',
            });
          assert.equal(
            env.get('DAPR_PUBSUB_NAME')?.value,
            target === 'gateway' ? 'pubsub-kafka-gateway' : 'pubsub-kafka',
          );
        } else {
          assert.ok(
            !Object.keys(ann).some((k) => k.startsWith('dapr.io/')),
            `${target}: no Dapr annotations`,
          );
        }
        if (s.cloud) {
          assert.equal(env.get('KAFKA_SSL')?.value, 'true');
          assert.equal(env.get('KAFKA_SASL_MECHANISM')?.value, 'SCRAM-SHA-256');
          assert.ok(env.get('KAFKA_SASL_PASSWORD')?.valueFrom?.secretKeyRef);
        }
        if (s.args.includes('schemaRegistry.url=https://registry.example:8081')) {
          assert.equal(env.get('SCHEMA_REGISTRY_URL')?.value, 'https://registry.example:8081');
          assert.equal(env.get('SCHEMA_REGISTRY_COMPATIBILITY')?.value, 'FULL');
          for (const key of ['SCHEMA_REGISTRY_USERNAME', 'SCHEMA_REGISTRY_PASSWORD'])
            assert.equal(env.get(key)?.valueFrom?.secretKeyRef?.name, 'registry-credentials', key);
          assert.equal(env.get('EVENT_ENCODING')?.value, 'avro');
        } else {
          assert.equal(env.get('SCHEMA_REGISTRY_URL'), undefined);
          assert.equal(env.get('EVENT_ENCODING'), undefined, 'JSON, the default');
        }
      }

      // Services for the HTTP targets the ingress routes to, at least api and gateway.
      for (const target of ['api', 'gateway']) {
        const svc = named(objs, 'Service', `${RELEASE}-${target}`);
        assert.equal(svc.spec.selector['app.kubernetes.io/component'], target);
      }

      // Migrations: a pre-install/pre-upgrade hook Job running `taskflow migrate`, without a sidecar.
      const job = named(objs, 'Job', `${RELEASE}-migrate`);
      assert.equal(job.metadata.annotations['helm.sh/hook'], 'pre-install,pre-upgrade');
      assert.deepEqual(job.spec.template.spec.containers[0].args, ['migrate']);
      assert.ok(
        !Object.keys(job.spec.template.metadata.annotations ?? {}).some((k) => k.startsWith('dapr.io/')),
      );
      assert.ok(envOf(job.spec.template.spec.containers[0]).get('DATABASE_URL')?.valueFrom?.secretKeyRef);
      const chartSecret = objs.find((o) => o.kind === 'Secret' && o.metadata.name === RELEASE);
      if (chartSecret) {
        // The Job's Secret must exist before the Job: a hook with a lower weight.
        assert.equal(chartSecret.metadata.annotations['helm.sh/hook'], 'pre-install,pre-upgrade');
        assert.ok(Number(chartSecret.metadata.annotations['helm.sh/hook-weight']) < 0);
      }

      // Autoscaling and disruption budgets.
      const hpas = byKind(objs, 'HorizontalPodAutoscaler');
      if (!s.name.startsWith('values-minikube')) {
        for (const target of CONSUMERS) {
          const hpa = named(objs, 'HorizontalPodAutoscaler', `${RELEASE}-${target}`);
          assert.equal(hpa.spec.scaleTargetRef.name, `${RELEASE}-${target}`);
          assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
          const d = named(objs, 'Deployment', `${RELEASE}-${target}`);
          assert.equal(d.spec.replicas, undefined, `${target}: replicas are left to the HPA`);
        }
        const gatewayHpa = named(objs, 'HorizontalPodAutoscaler', `${RELEASE}-gateway`);
        assert.equal(gatewayHpa.spec.scaleTargetRef.kind, 'StatefulSet');
        assert.ok(byKind(objs, 'PodDisruptionBudget').length >= TARGET_NAMES.length);
      } else {
        assert.equal(hpas.length, 0);
      }

      // Ingress: WebSocket to the gateway, the rest to the api; TLS through cert-manager in the cloud.
      const ingresses = byKind(objs, 'Ingress');
      if (s.ingress) {
        const main = named(objs, 'Ingress', RELEASE);
        const paths = new Map<string, string>(
          main.spec.rules[0].http.paths.map((p: any) => [p.path, p.backend.service.name]),
        );
        assert.equal(paths.get('/ws'), `${RELEASE}-gateway`);
        assert.equal(paths.get('/'), `${RELEASE}-api`);
        assert.equal(main.metadata.annotations['nginx.ingress.kubernetes.io/proxy-read-timeout'], '3600');
        const regex = named(objs, 'Ingress', `${RELEASE}-regex`);
        assert.equal(regex.metadata.annotations['nginx.ingress.kubernetes.io/use-regex'], 'true');
        if (s.cloud) {
          assert.equal(main.metadata.annotations['cert-manager.io/cluster-issuer'], 'letsencrypt-prod');
          assert.equal(main.spec.tls[0].hosts[0], main.spec.rules[0].host);
          // One Certificate for the shared TLS Secret: cert-manager refuses a second owner.
          assert.equal(regex.metadata.annotations['cert-manager.io/cluster-issuer'], undefined);
        }
      } else {
        assert.equal(ingresses.length, 0);
      }

      // Dapr objects rendered by the chart.
      const components = byKind(objs, 'Component');
      if (s.dapr) {
        assert.ok(named(objs, 'Secret', `${RELEASE}-dapr-token`).stringData.token.length >= 32);
        const pubsub = named(objs, 'Component', 'pubsub-kafka');
        assert.equal(pubsub.spec.type, 'pubsub.kafka');
        const meta = new Map<string, any>(pubsub.spec.metadata.map((m: any) => [m.name, m]));
        assert.ok(meta.get('brokers').secretKeyRef, 'brokers from the Kafka Secret');
        assert.equal(meta.get('consumerGroup').value, '{appID}');
        if (s.cloud) {
          assert.equal(meta.get('authType').value, 'password');
          assert.equal(meta.get('saslMechanism').value, 'SHA-256');
          assert.ok(meta.get('saslPassword').secretKeyRef);
          assert.equal(meta.get('disableTls').value, 'false');
        } else {
          assert.equal(meta.get('authType').value, 'none');
        }
        assert.deepEqual([...pubsub.scopes].sort(), TARGET_NAMES.map((t) => `taskflow-${t}`).sort());
        const gw = named(objs, 'Component', 'pubsub-kafka-gateway');
        assert.deepEqual(gw.scopes, ['taskflow-gateway']);
        const res = named(objs, 'Resiliency', 'taskflow');
        assert.deepEqual(res.spec.policies.retries.pubsubInbound, {
          policy: 'exponential',
          maxInterval: '10s',
          maxRetries: 12,
        });
        assert.equal(res.spec.targets.components['pubsub-kafka'].inbound.retry, 'pubsubInbound');
        assert.equal(named(objs, 'Configuration', 'taskflow').spec.tracing.samplingRate, '1');
      } else {
        assert.equal(components.length, 0);
      }
    });
  }

  it('the chart renders the same Dapr policies as deploy/dapr/k8s/', () => {
    const rendered = validManifests(
      helmTemplate([...valueFile('values-minikube.yaml'), '--set', 'dapr.enabled=true']),
      'minikube + dapr',
    );
    const files = [
      'deploy/dapr/k8s/resiliency.yaml',
      'deploy/dapr/k8s/configuration.yaml',
      'deploy/dapr/k8s/minikube/pubsub-kafka.yaml',
    ];
    const { result: minikube } = kubevalidate(['k8s', ...files]);
    assert.equal(minikube.valid, true, JSON.stringify(minikube.errors));
    const { result: cloud } = kubevalidate([
      'k8s',
      'deploy/dapr/k8s/resiliency.yaml',
      'deploy/dapr/k8s/configuration.yaml',
      'deploy/dapr/k8s/cloud/pubsub-kafka.yaml',
    ]);
    assert.equal(cloud.valid, true, JSON.stringify(cloud.errors));
    const statics = minikube.objects.map((o: any) => o.object);
    for (const kind of ['Resiliency', 'Configuration']) {
      assert.deepEqual(byKind(rendered, kind)[0].spec, byKind(statics, kind)[0].spec, `${kind} spec`);
    }
    // docs/deploy.md says what the Resiliency does (it said 5 retries after the chart's became 12).
    const { maxRetries, maxInterval } = byKind(rendered, 'Resiliency')[0].spec.policies.retries.pubsubInbound;
    const doc = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8').replace(/\s+/g, ' ');
    assert.match(doc, new RegExp(`Resiliency \\(inbound retries: exponential, ${maxRetries} retries`));
    assert.match(doc, new RegExp(`at most ${parseInt(maxInterval, 10)} s apart`));
    for (const name of ['pubsub-kafka', 'pubsub-kafka-gateway']) {
      // Same settings; the chart takes the brokers from the Kafka Secret, the static file names them.
      const strip = (c: any) =>
        c.spec.metadata
          .filter((m: any) => m.name !== 'brokers')
          .sort((x: any, y: any) => x.name.localeCompare(y.name));
      assert.deepEqual(strip(named(rendered, 'Component', name)), strip(named(statics, 'Component', name)));
      assert.deepEqual(named(rendered, 'Component', name).scopes, named(statics, 'Component', name).scopes);
    }
    // The cloud component authenticates with the Secret the app uses.
    const cloudPubsub = named(
      cloud.objects.map((o: any) => o.object),
      'Component',
      'pubsub-kafka',
    );
    assert.deepEqual(
      cloudPubsub.spec.metadata.filter((m: any) => m.secretKeyRef).map((m: any) => m.secretKeyRef.name),
      ['taskflow-kafka', 'taskflow-kafka', 'taskflow-kafka'],
    );
  });

  it('the Minikube development PostgreSQL and Kafka manifests validate', () => {
    const { status, result } = kubevalidate(['k8s', 'deploy/minikube/dev-infra.yaml']);
    assert.deepEqual(result.errors, []);
    assert.equal(status, 0);
    const objs = result.objects.map((o: any) => o.object);
    assert.ok(named(objs, 'Service', 'postgres') && named(objs, 'Service', 'kafka'));
    // values-minikube.yaml points at them.
    const values = readFileSync(join(CHART, 'values-minikube.yaml'), 'utf8');
    assert.match(values, /databaseUrl: postgres:\/\/taskflow:taskflow@postgres:5432\/taskflow/);
    assert.match(values, /brokers: kafka:9092/);
  });

  it('values.schema.json rejects misspelled keys and the latest tag; the chart refuses weak JWT secrets', () => {
    for (const [args, message] of [
      [['--set', 'targets.api.replcas=3'], /replcas/],
      [['--set', 'image.tag=latest'], /image\/tag/],
      [['--set', 'kafka.sasl.mechanism=SCRAM-SHA-1'], /mechanism/],
      [['--set', 'secrets.jwtSecret=short'], /at least 32 bytes/],
      [['--set', 'schemaRegistry.eventEncoding=protobuf'], /eventEncoding/],
      [
        [
          '--set',
          'dapr.enabled=true',
          '--set',
          'schemaRegistry.url=http://registry:8081',
          '--set',
          'schemaRegistry.eventEncoding=avro',
        ],
        /eventEncoding=avro is for the Kafka transport/,
      ],
      [
        ['--set', 'dapr.enabled=true', '--set', 'kafka.topicPrefix=team1.'],
        /topicPrefix is for the Kafka transport/,
      ],
    ] as const) {
      const r = helm(['template', RELEASE, CHART, ...DATABASE, ...args]);
      assert.notEqual(r.status, 0, `helm template ${args.join(' ')} should fail`);
      assert.match(r.stderr, message);
    }
    // No database: refused at once, naming the values (it was a migrate Job stuck until helm's timeout).
    const r = helm(['template', RELEASE, CHART]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /secrets\.databaseUrl is required .*secrets\.existingSecret/);
    assert.equal(helm(['template', RELEASE, CHART, '--set', 'secrets.existingSecret=mine']).status, 0);
  });

  it('refuses a gateway StatefulSet name too long for its pods; no INTERNAL_URL to a target that is not there', () => {
    const long = helm([
      'template',
      RELEASE,
      CHART,
      ...DATABASE,
      '--set',
      `fullnameOverride=${'b'.repeat(46)}`,
    ]);
    assert.notEqual(long.status, 0);
    assert.match(
      long.stderr,
      /longer than 52 characters: its pods would get no controller-revision-hash label/,
    );
    const fits = validManifests(
      helmTemplate([...DATABASE, '--set', `fullnameOverride=${'b'.repeat(44)}`]),
      '44',
    );
    assert.ok(named(fits, 'StatefulSet', `${'b'.repeat(44)}-gateway`));
    const without = validManifests(
      helmTemplate([...DATABASE, '--set', 'targets.reminders.enabled=false']),
      'off',
    );
    const api = envOf(named(without, 'Deployment', `${RELEASE}-api`).spec.template.spec.containers[0]);
    assert.equal(api.get('INTERNAL_URL'), undefined, 'reminders has no Service to reach');
  });

  it('Kafka: replicated topics by default, TLS as the process decides unless set, a ticket key with a JWKS', () => {
    const containerEnv = (objs: any[], target: string) =>
      envOf(named(objs, workloadKind(target), `${RELEASE}-${target}`).spec.template.spec.containers[0]);
    const plain = validManifests(helmTemplate(DATABASE), 'default');
    const env = containerEnv(plain, 'relay');
    assert.equal(env.get('KAFKA_REPLICATION_FACTOR')?.value, '3');
    assert.equal(env.get('KAFKA_SSL'), undefined, 'unset: on with SASL or a CA, as the process decides');
    assert.equal(
      containerEnv(validManifests(helmTemplate(valueFile('values-minikube.yaml')), 'minikube'), 'relay').get(
        'KAFKA_REPLICATION_FACTOR',
      )?.value,
      '1',
    );
    // SASL without tls.enabled: TLS in the process (KAFKA_SSL unset) and in the Dapr component alike.
    const sasl = validManifests(
      helmTemplate([...DATABASE, '--set', 'kafka.sasl.mechanism=PLAIN', '--set', 'dapr.enabled=true']),
      'sasl',
    );
    assert.equal(containerEnv(sasl, 'relay').get('KAFKA_SSL'), undefined);
    const meta = new Map<string, any>(
      named(sasl, 'Component', 'pubsub-kafka').spec.metadata.map((m: any) => [m.name, m.value]),
    );
    assert.equal(meta.get('disableTls'), 'false');
    const off = helmTemplate([
      ...DATABASE,
      '--set',
      'kafka.sasl.mechanism=PLAIN',
      '--set',
      'kafka.tls.enabled=false',
    ]);
    assert.equal(containerEnv(validManifests(off, 'tls off'), 'relay').get('KAFKA_SSL')?.value, 'false');
    // A CA inline with tls.enabled unset (TLS on, as a CA turns it on): the Secret every pod mounts is rendered
    // (it was rendered only with tls.enabled: true, and the pods waited for it in ContainerCreating).
    const caFile = join(scratch, 'kafka-ca.pem');
    writeFileSync(caFile, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    for (const dapr of [[], ['--set', 'dapr.enabled=true']]) {
      const yaml = helmTemplate([...DATABASE, '--set-file', `kafka.tls.ca=${caFile}`, ...dapr]);
      const { result } = kubevalidate(['k8s', '-'], yaml);
      assert.deepEqual(
        ((result.externalRefs ?? []) as string[]).filter((r) => r.includes('kafka-ca')),
        [],
        `the CA Secret the pods mount is rendered (dapr: ${dapr.length > 0})`,
      );
      const withCa = validManifests(yaml, 'inline CA');
      const mounted = named(withCa, 'Deployment', `${RELEASE}-relay`).spec.template.spec.volumes.find(
        (v: any) => v.name === 'kafka-ca',
      );
      assert.equal(named(withCa, 'Secret', mounted.secret.secretName).kind, 'Secret');
    }
    // JWKS without an HS256 secret: WebSocket tickets need a key every gateway replica shares.
    const jwks = validManifests(
      helmTemplate([...DATABASE, '--set', 'auth.jwksUrl=https://idp.example/jwks']),
      'jwks',
    );
    const secret = named(jwks, 'Secret', RELEASE);
    assert.ok((secret.stringData.GATEWAY_TICKET_SECRET ?? '').length >= 32);
    assert.equal(secret.stringData.JWT_SECRET, undefined);
    assert.equal(
      containerEnv(jwks, 'gateway').get('GATEWAY_TICKET_SECRET')?.valueFrom?.secretKeyRef?.name,
      RELEASE,
    );
  });

  it("the migrate Job's `taskflow migrate` runs with the targets' `env` (a bus setting in it too)", () => {
    // The Job gets `env` but not the bus (BUS, Kafka): EVENT_ENCODING=avro there failed every install and upgrade.
    const objs = validManifests(
      helmTemplate([
        ...DATABASE,
        '--set',
        'schemaRegistry.url=http://registry:8081',
        '--set',
        'env.EVENT_ENCODING=avro',
      ]),
      'avro in env',
    );
    const container = named(objs, 'Job', `${RELEASE}-migrate`).spec.template.spec.containers[0];
    const env: Record<string, string> = { PATH: process.env.PATH ?? '' };
    for (const e of container.env as { name: string; value?: string }[])
      env[e.name] = e.value ?? (e.name === 'DATABASE_URL' ? join(scratch, 'migrate-job-db') : 'x'.repeat(40));
    assert.equal(env.EVENT_ENCODING, 'avro');
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/taskflow.js'), ...container.args], {
      cwd: scratch,
      env,
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /made a new database/);
  });

  it('extraEnv reaches the migrate Job as every target; its deadline fits the documented helm --timeout', () => {
    // A password from an operator's Secret beside a password-less DATABASE_URL (node-postgres reads PGPASSWORD):
    // the targets had it, the pre-install/pre-upgrade Job did not, and the install failed.
    const objs = validManifests(
      helmTemplate([
        '--set',
        'secrets.databaseUrl=postgres://taskflow@postgres:5432/taskflow',
        '--set',
        'extraEnv[0].name=PGPASSWORD',
        '--set',
        'extraEnv[0].valueFrom.secretKeyRef.name=taskflow-pg-app',
        '--set',
        'extraEnv[0].valueFrom.secretKeyRef.key=password',
      ]),
      'extraEnv',
    );
    const names = (kind: string, name: string) =>
      (named(objs, kind, name).spec.template.spec.containers[0].env as { name: string }[]).map((e) => e.name);
    assert.ok(names('Deployment', `${RELEASE}-api`).includes('PGPASSWORD'));
    assert.ok(
      names('Job', `${RELEASE}-migrate`).includes('PGPASSWORD'),
      names('Job', `${RELEASE}-migrate`).join(),
    );
    // helm waits for a hook at most --timeout (5m by default) and then fails the release while the Job runs on.
    const deadline = named(objs, 'Job', `${RELEASE}-migrate`).spec.activeDeadlineSeconds as number;
    const doc = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8');
    const commands = doc.split('\n').filter((l) => /^\s*helm (upgrade|install)/.test(l));
    assert.ok(commands.length > 0);
    for (const c of commands) {
      const minutes = Number(/--timeout[= ](\d+)m/.exec(c)?.[1] ?? 5);
      assert.ok(deadline < minutes * 60, `${c.trim()}: helm waits ${minutes}m for a Job of ${deadline} s`);
    }
  });

  it('kubevalidate rejects misspelled fields, wrong types and broken references (it is not a rubber stamp)', () => {
    const good = helmTemplate(valueFile('values-minikube.yaml'));
    const cases: [string, string, RegExp][] = [
      [
        'misspelled field',
        good.replace('readinessProbe:', 'readynessProbe:'),
        /unknown field.*readynessProbe/,
      ],
      ['wrong case', good.replace('containerPort:', 'ContainerPort:'), /unknown field.*ContainerPort/],
      ['wrong type', good.replace(/containerPort: 3000/, 'containerPort: "3000"'), /cannot unmarshal string/],
      [
        'selector mismatch',
        good.replace(/(matchLabels:\n(\s+)app\.kubernetes\.io\/name: )taskflow/, '$1taskfl0w'),
        /does not match the pod template labels|selects no/,
      ],
      [
        'probe on a missing port',
        good.replace(/(httpGet:\n\s+path: \/healthz\n\s+)port: http/, '$1port: web'),
        /no port named "web"/,
      ],
      [
        'ingress to a missing service',
        good.replace(/name: taskflow-gateway\n(\s+)port:/, 'name: taskflow-gatewai\n$1port:'),
        /not in these manifests/,
      ],
      [
        'removed API version',
        good.replace('apiVersion: networking.k8s.io/v1', 'apiVersion: extensions/v1beta1'),
        /unsupported apiVersion\/kind extensions\/v1beta1 Ingress/,
      ],
    ];
    for (const [what, yaml, expected] of cases) {
      assert.notEqual(yaml, good, `${what}: the mutation applies`);
      const { status, result } = kubevalidate(['k8s', '-'], yaml);
      assert.equal(status, 1, `${what}: must fail`);
      assert.match(result.errors.join('\n'), expected, what);
    }
    const dapr = readFileSync(join(ROOT, 'deploy/dapr/k8s/resiliency.yaml'), 'utf8');
    const badDapr: [string, RegExp][] = [
      [dapr.replace('maxRetries: 12', 'maxRetrys: 12'), /unknown field.*maxRetrys/],
      [dapr.replace('policy: exponential', 'policy: exponentail'), /constant or exponential/],
      [dapr.replace('retry: pubsubInbound', 'retry: pubsubInbond'), /no retry policy named "pubsubInbond"/],
      [
        readFileSync(join(ROOT, 'deploy/dapr/k8s/minikube/pubsub-kafka.yaml'), 'utf8').replace(
          'type: pubsub.kafka',
          'typ: pubsub.kafka',
        ),
        /unknown field.*typ/,
      ],
    ];
    for (const [yaml, expected] of badDapr) {
      const { status, result } = kubevalidate(['k8s', '-'], yaml);
      assert.equal(status, 1);
      assert.match(result.errors.join('\n'), expected);
    }
  });

  describe('Dockerfile (BuildKit parser and lint rules)', () => {
    let df: any;
    before(() => {
      const r = kubevalidate(['dockerfile', 'Dockerfile']);
      df = r.result;
      assert.deepEqual(df.errors, []);
      assert.deepEqual(df.warnings, [], 'BuildKit lint warnings');
      assert.equal(r.status, 0);
    });
    const commands = (stage: any, instruction: string) =>
      stage.commands.filter((c: any) => c.instruction === instruction);

    it('is multi-stage on pinned node:24 (LTS) bookworm-slim images, never latest', () => {
      assert.ok(df.stages.length >= 2);
      for (const s of df.stages) {
        if (!s.baseImage) continue; // FROM an earlier stage
        assert.match(s.baseImage, /^node:24[.\w-]*-bookworm-slim(@sha256:[a-f0-9]{64})?$/, s.baseImage);
        assert.doesNotMatch(s.baseImage, /:latest\b/);
      }
    });

    it('builds with npm ci + npm run build and installs production dependencies with npm ci --omit=dev', () => {
      const runs = df.stages
        .flatMap((s: any) => commands(s, 'run'))
        .map((c: any) => c.details.CmdLine.join(' '));
      assert.ok(runs.some((r: string) => /npm ci\b(?!.*--omit=dev)/.test(r)));
      assert.ok(runs.some((r: string) => /npm run build/.test(r)));
      assert.ok(runs.some((r: string) => /npm ci --omit=dev/.test(r)));
    });

    it("runs as a non-root user with a HEALTHCHECK on /healthz, EXPOSE 3000, node with npm start's options, bin/taskflow.js up", () => {
      const final = df.stages[df.stages.length - 1];
      const users = commands(final, 'user');
      assert.ok(users.length > 0, 'USER in the final stage');
      const user = users[users.length - 1].details.User as string;
      assert.doesNotMatch(user.split(':')[0]!, /^(root|0)$/);
      const hc = commands(final, 'healthcheck');
      assert.equal(hc.length, 1);
      assert.match(hc[0].details.Health.Test.join(' '), /fetch\(.*\/healthz/);
      assert.deepEqual(commands(final, 'expose')[0].details.Ports, ['3000']);
      // The Node options of `npm start` (package.json): one V8 worker thread (ADR 0009) and a young generation
      // of up to 32 MB (ADR 0008).
      const start = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as any).scripts
        .start as string;
      assert.equal(start, 'node --v8-pool-size=1 --max-semi-space-size=32 bin/taskflow.js up');
      assert.deepEqual(commands(final, 'entrypoint')[0].details.CmdLine, [
        'node',
        '--v8-pool-size=1',
        '--max-semi-space-size=32',
        'bin/taskflow.js',
      ]);
      assert.deepEqual(commands(final, 'cmd')[0].details.CmdLine, ['up']);
      assert.equal(commands(final, 'entrypoint')[0].details.PrependShell, false);
    });

    it('ships what the compiled CLI loads at run time: dist + migrations, bin, web, node_modules', () => {
      // src/store/migrate.ts reads the SQL files next to itself: the build must put them beside dist/store/migrate.js.
      assert.match(
        readFileSync(join(ROOT, 'src/store/migrate.ts'), 'utf8'),
        /join\(dirname\(fileURLToPath\(import\.meta\.url\)\), 'migrations'\)/,
      );
      const build = spawnSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(build.status, 0, build.stderr);
      assert.deepEqual(
        readdirSync(join(ROOT, 'dist/store/migrations')).sort(),
        readdirSync(join(ROOT, 'src/store/migrations')).sort(),
      );
      assert.ok(existsSync(join(ROOT, 'dist/store/migrate.js')));
      const final = df.stages[df.stages.length - 1];
      const dests = commands(final, 'copy').map((c: any) => c.details.DestPath.replace(/^\.\//, ''));
      for (const d of ['node_modules', 'bin', 'web', 'dist', ''])
        assert.ok(dests.includes(d), `runtime copies ${d || '.'}`);
      // Whatever is copied from the build context is allowed by the .dockerignore allow-list.
      const allowed = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('!'))
        .map((l) => l.slice(1).replace(/\/$/, ''));
      for (const s of df.stages)
        for (const c of commands(s, 'copy'))
          if (!c.details.From)
            for (const src of c.details.SourcePaths as string[])
              assert.ok(
                allowed.includes(src) || allowed.includes(src.split('/')[0]!),
                `${src} is in the build context (.dockerignore)`,
              );
    });

    it('the lint rules fire on a bad Dockerfile', () => {
      const bad = join(scratch, 'Dockerfile.bad');
      writeFileSync(bad, 'FROM node:latest as build\nENV API_TOKEN abc\nCMD node x.js\n');
      const { status, result } = kubevalidate(['dockerfile', bad]);
      assert.equal(status, 1);
      const rules = result.warnings.map((w: any) => w.rule);
      for (const rule of [
        'FromAsCasing',
        'LegacyKeyValueFormat',
        'SecretsUsedInArgOrEnv',
        'JSONArgsRecommended',
      ])
        assert.ok(rules.includes(rule), `${rule} in ${rules.join(', ')}`);
    });
  });

  describe('deploy/compose.yaml (compose-go, the compose-spec loader)', () => {
    let project: any;
    before(() => {
      const r = kubevalidate(['compose', 'deploy/compose.yaml']);
      assert.deepEqual(r.result.errors, []);
      assert.equal(r.status, 0);
      project = r.result.project;
    });

    it('runs every target as its own service on BUS=kafka, after migrate and a healthy Kafka', () => {
      for (const target of TARGET_NAMES) {
        const svc = project.services[target];
        assert.ok(svc, `service ${target}`);
        assert.deepEqual(svc.command, ['serve', target]);
        assert.equal(svc.environment.BUS, 'kafka');
        assert.equal(svc.depends_on.migrate.condition, 'service_completed_successfully');
        assert.equal(svc.depends_on.kafka.condition, 'service_healthy');
        assert.match(svc.healthcheck.test.join(' '), /\/healthz/);
      }
      assert.deepEqual(project.services.migrate.command, ['migrate']);
      assert.equal(project.services.migrate.depends_on.postgres.condition, 'service_healthy');
      for (const name of ['postgres', 'kafka', 'schema-registry'])
        assert.ok(project.services[name].healthcheck.test, name);
    });

    it('registers the event schemas with a schema registry on the same broker; JSON unless EVENT_ENCODING says avro', () => {
      const registry = project.services['schema-registry'];
      assert.equal(
        registry.environment.SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS,
        'PLAINTEXT://kafka:9092',
      );
      assert.equal(registry.depends_on.kafka.condition, 'service_healthy');
      for (const target of TARGET_NAMES) {
        const svc = project.services[target];
        assert.equal(svc.environment.SCHEMA_REGISTRY_URL, 'http://schema-registry:8081', target);
        assert.equal(svc.environment.EVENT_ENCODING, 'json', target);
        assert.equal(svc.depends_on['schema-registry'].condition, 'service_healthy', target);
      }
    });

    it('waits on health, not on start, and keeps off the host network', () => {
      for (const [name, svc] of Object.entries<any>(project.services)) {
        for (const [dep, d] of Object.entries<any>(svc.depends_on ?? {}))
          assert.notEqual(d.condition, 'service_started', `${name} -> ${dep}`);
        assert.notEqual(svc.network_mode, 'host', name);
        assert.ok(!svc.privileged, name);
        assert.doesNotMatch(svc.image, /:latest$|^[^:]+$/, `${name}: pinned image`);
      }
    });

    it('compose-go rejects a broken file', () => {
      const original = readFileSync(join(ROOT, 'deploy/compose.yaml'), 'utf8');
      for (const [what, text, expected] of [
        [
          'unknown depends_on condition',
          original.replace('condition: service_completed_successfully', 'condition: service_finished'),
          /service_finished|condition/,
        ],
        [
          'unknown service key',
          original.replace('restart: unless-stopped', 'restrat: unless-stopped'),
          /restrat/,
        ],
        [
          'depends_on an undefined service',
          original.replace('      postgres:\n        condition', '      postgress:\n        condition'),
          /postgress/,
        ],
      ] as const) {
        assert.notEqual(text, original, `${what}: the mutation applies`);
        const bad = join(scratch, 'compose.yaml');
        writeFileSync(bad, text);
        const { status, result } = kubevalidate(['compose', bad]);
        assert.equal(status, 1, `${what}: must fail`);
        assert.match(result.errors.join('\n'), expected, what);
      }
    });
  });
});
