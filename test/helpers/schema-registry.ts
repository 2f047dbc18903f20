/**
 * A schema registry speaking the Confluent Schema Registry REST API (the subset Taskflow and its operators
 * use), over real HTTP: subjects with versions, global ids (the same schema text has one id everywhere),
 * compatibility levels per subject (default BACKWARD, as Confluent's), 409 for an incompatible schema, 422
 * for an invalid one, error bodies `{error_code, message}`, Basic auth when given credentials. No registry
 * available from the reachable package registries runs here (Confluent's artifacts are not served, Karapace
 * is not on PyPI, Apicurio's Maven artifacts are incomplete): this stands in for them in the tests. JSON
 * Schema compatibility is judged with Taskflow's own checker (src/contracts/schema-compat.ts), which the
 * unit tests check on its own; Avro compatibility with avsc's schema resolution (a reader resolves a writer),
 * the rule of the Avro specification that Confluent's registry applies.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import avsc from 'avsc';
import { compatibilityProblems, type Compatibility } from '../../src/contracts/schema-compat.ts';

interface Registered {
  id: number;
  schema: string;
  schemaType: string;
}

export interface FakeRegistry {
  url: string;
  /** Requests by "METHOD path" (no query). */
  requests: string[];
  subjects: Map<string, Registered[]>;
  config: Map<string, string>;
  /** Registers a version directly (as another team's producer would have). */
  seed(subject: string, schema: object, schemaType?: 'JSON' | 'AVRO'): void;
  close(): Promise<void>;
}

const CT = 'application/vnd.schemaregistry.v1+json';

/** Avro compatibility of `schema` with a registered version: backward = it reads the old, forward = the reverse. */
function avroProblems(
  registered: Registered,
  schema: object,
  mode: Compatibility,
  version: number,
): string[] {
  if (registered.schemaType !== 'AVRO')
    return [`version ${version} is a ${registered.schemaType} schema, not Avro`];
  const before = avsc.Type.forSchema(JSON.parse(registered.schema) as avsc.Schema);
  const now = avsc.Type.forSchema(schema as avsc.Schema);
  const problems: string[] = [];
  const check = (reader: avsc.Type, writer: avsc.Type, direction: string) => {
    try {
      reader.createResolver(writer);
    } catch (err) {
      problems.push(`${(err as Error).message} (${direction}, against version ${version})`);
    }
  };
  if (mode === 'backward' || mode === 'full') check(now, before, 'backward');
  if (mode === 'forward' || mode === 'full') check(before, now, 'forward');
  return problems;
}

export async function startFakeRegistry(auth?: {
  username: string;
  password: string;
}): Promise<FakeRegistry> {
  const subjects = new Map<string, Registered[]>();
  const config = new Map<string, string>();
  const ids = new Map<string, number>(); // schema text -> id
  const byId = new Map<number, Registered>();
  const requests: string[] = [];
  const idOf = (schema: string, schemaType: string) => {
    let id = ids.get(schema);
    if (id === undefined) {
      id = ids.size + 1;
      ids.set(schema, id);
      byId.set(id, { id, schema, schemaType });
    }
    return id;
  };
  const problemsAgainst = (subject: string, schema: object, schemaType: string): string[] => {
    const level = config.get(subject) ?? config.get('') ?? 'BACKWARD';
    if (level === 'NONE') return [];
    const versions = subjects.get(subject) ?? [];
    const against = level.endsWith('_TRANSITIVE') ? versions : versions.slice(-1);
    const mode = level.replace('_TRANSITIVE', '').toLowerCase() as Compatibility;
    if (schemaType === 'AVRO')
      return against.flatMap((v) => avroProblems(v, schema, mode, versions.indexOf(v) + 1));
    return against.flatMap((v) =>
      compatibilityProblems(
        JSON.parse(v.schema) as Record<string, unknown>,
        schema as Record<string, unknown>,
        mode,
      ).map((p) => `${p.path}: ${p.rule} (${p.direction}, against version ${versions.indexOf(v) + 1})`),
    );
  };
  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': CT });
    res.end(JSON.stringify(body));
  };
  const error = (res: ServerResponse, status: number, code: number, message: string) =>
    send(res, status, { error_code: code, message });
  const bodyOf = async (req: IncomingMessage) => {
    let text = '';
    for await (const chunk of req) text += String(chunk);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };

  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://registry');
      const path = decodeURIComponent(url.pathname);
      requests.push(`${req.method} ${path}`);
      if (auth) {
        const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
        if (req.headers.authorization !== expected) return error(res, 401, 401, 'Unauthorized');
      }
      let m: RegExpExecArray | null;
      if ((m = /^\/config\/(.+)$/.exec(path))) {
        if (req.method === 'PUT') {
          const { compatibility } = await bodyOf(req);
          if (typeof compatibility !== 'string') return error(res, 422, 42203, 'Invalid compatibility level');
          config.set(m[1]!, compatibility);
          return send(res, 200, { compatibility });
        }
        const level = config.get(m[1]!);
        return level
          ? send(res, 200, { compatibilityLevel: level })
          : error(res, 404, 40408, 'Subject does not have subject-level compatibility configured');
      }
      if ((m = /^\/compatibility\/subjects\/(.+)\/versions\/latest$/.exec(path)) && req.method === 'POST') {
        const subject = m[1]!;
        if (!subjects.get(subject)?.length) return error(res, 404, 40401, `Subject '${subject}' not found.`);
        const { schema, schemaType = 'AVRO' } = await bodyOf(req);
        const messages = problemsAgainst(subject, JSON.parse(String(schema)) as object, String(schemaType));
        return send(res, 200, {
          is_compatible: messages.length === 0,
          ...(url.searchParams.get('verbose') === 'true' ? { messages } : {}),
        });
      }
      if ((m = /^\/subjects\/(.+)\/versions$/.exec(path))) {
        const subject = m[1]!;
        if (req.method === 'GET') {
          const versions = subjects.get(subject);
          return versions
            ? send(
                res,
                200,
                versions.map((_, i) => i + 1),
              )
            : error(res, 404, 40401, `Subject '${subject}' not found.`);
        }
        if (req.method === 'POST') {
          const { schema, schemaType = 'AVRO' } = await bodyOf(req);
          let parsed: object;
          try {
            parsed = JSON.parse(String(schema)) as object;
            if (typeof parsed !== 'object' || parsed === null) throw new Error('not an object');
          } catch (err) {
            return error(res, 422, 42201, `Invalid schema: ${(err as Error).message}`);
          }
          const versions = subjects.get(subject) ?? [];
          const same = versions.find((v) => v.schema === schema);
          if (same) return send(res, 200, { id: same.id });
          const problems = problemsAgainst(subject, parsed, String(schemaType));
          if (problems.length)
            return error(
              res,
              409,
              409,
              `Schema being registered is incompatible with an earlier schema for subject "${subject}", details: ${problems.join('; ')}`,
            );
          const id = idOf(String(schema), String(schemaType));
          versions.push({ id, schema: String(schema), schemaType: String(schemaType) });
          subjects.set(subject, versions);
          return send(res, 200, { id });
        }
      }
      if ((m = /^\/subjects\/([^/]+)$/.exec(path)) && req.method === 'POST') {
        // Is this schema registered under the subject? (Confluent: 40401 no subject, 40403 no such schema.)
        const subject = m[1]!;
        const versions = subjects.get(subject);
        if (!versions?.length) return error(res, 404, 40401, `Subject '${subject}' not found.`);
        const { schema } = await bodyOf(req);
        const i = versions.findIndex((v) => v.schema === schema);
        if (i < 0) return error(res, 404, 40403, 'Schema not found');
        return send(res, 200, { subject, id: versions[i]!.id, version: i + 1, schema });
      }
      if ((m = /^\/schemas\/ids\/([0-9]+)$/.exec(path)) && req.method === 'GET') {
        const r = byId.get(Number(m[1]));
        return r
          ? send(res, 200, { schema: r.schema, schemaType: r.schemaType })
          : error(res, 404, 40403, 'Schema not found');
      }
      if (path === '/subjects' && req.method === 'GET') return send(res, 200, [...subjects.keys()]);
      return error(res, 404, 404, 'HTTP 404 Not Found');
    })().catch((err: unknown) => error(res, 500, 50001, String(err)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    subjects,
    config,
    seed(subject, schema, schemaType = 'JSON') {
      const text = JSON.stringify(schema);
      const versions = subjects.get(subject) ?? [];
      versions.push({ id: idOf(text, schemaType), schema: text, schemaType });
      subjects.set(subject, versions);
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
