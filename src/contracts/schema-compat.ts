/**
 * Compatibility of two versions of an event schema (pure). "Reader" is the schema a consumer validates with,
 * "writer" the one the producer wrote the event under. A change is
 * - backward compatible when consumers on the new version read events written under the old one (the new
 *   schema accepts everything the old one did): checked as `readerProblems(new, old)`;
 * - forward compatible when consumers still on the old version read events written under the new one (a
 *   rolling upgrade, producers first): `readerProblems(old, new)`;
 * - full when both hold.
 * For the JSON Schema keywords the event schemas use (type, const, enum, required, properties,
 * additionalProperties, items, anyOf, string, number and array bounds, pattern, format). A keyword it does not
 * know, in either schema, is reported, not ignored: the check never passes a change it cannot judge.
 */

export type Compatibility = 'backward' | 'forward' | 'full';

/** A schema registry's compatibility levels (Confluent's names; SCHEMA_REGISTRY_COMPATIBILITY). */
export const COMPATIBILITY_LEVELS = [
  'BACKWARD',
  'BACKWARD_TRANSITIVE',
  'FORWARD',
  'FORWARD_TRANSITIVE',
  'FULL',
  'FULL_TRANSITIVE',
  'NONE',
] as const;
export type CompatibilityLevel = (typeof COMPATIBILITY_LEVELS)[number];

export interface CompatProblem {
  /** JSON pointer of the field in the event, e.g. `/data/task/title`. */
  path: string;
  /** The rule the change breaks. */
  rule: string;
  /** Which direction it breaks: new readers of old events (backward) or old readers of new events (forward). */
  direction: 'backward' | 'forward';
}

type Schema = Record<string, unknown>;

const KNOWN = new Set([
  '$id',
  '$schema',
  'title',
  'description',
  'examples',
  'type',
  'const',
  'enum',
  'required',
  'properties',
  'additionalProperties',
  'items',
  'anyOf',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'minItems',
  'maxItems',
  'pattern',
  'format',
]);

/** Problems of the change from `before` to `after` under `mode`. */
export function compatibilityProblems(before: Schema, after: Schema, mode: Compatibility): CompatProblem[] {
  const problems: CompatProblem[] = [];
  if (mode !== 'forward')
    for (const p of readerProblems(after, before)) problems.push({ ...p, direction: 'backward' });
  if (mode !== 'backward')
    for (const p of readerProblems(before, after)) problems.push({ ...p, direction: 'forward' });
  return problems;
}

/** Where `reader` refuses something `writer` accepts (empty: every event valid for the writer is for the reader). */
export function readerProblems(
  reader: Schema,
  writer: Schema,
  path = '',
): Omit<CompatProblem, 'direction'>[] {
  const out: Omit<CompatProblem, 'direction'>[] = [];
  const at = path || '/';
  for (const s of [reader, writer])
    for (const k of Object.keys(s))
      if (!KNOWN.has(k)) out.push({ path: at, rule: `the check does not know the keyword "${k}"` });
  if (out.length) return out;

  // A writer that may write one of several shapes: each of them must be readable.
  if (Array.isArray(writer.anyOf)) {
    for (const branch of writer.anyOf as Schema[]) out.push(...readerProblems(reader, branch, path));
    return dedupe(out);
  }
  // A reader that accepts one of several shapes: some branch must read the writer's shape; the one whose
  // types overlap it is compared (the schemas use anyOf for "this or null").
  if (Array.isArray(reader.anyOf)) {
    const branches = reader.anyOf as Schema[];
    const candidates = branches.filter((b) => overlaps(typesOf(b), typesOf(writer)));
    if (candidates.length === 0)
      return [
        {
          path: at,
          rule: `the reader accepts none of the writer's types (${[...typesOf(writer)].join(', ')})`,
        },
      ];
    const tried = candidates.map((b) => readerProblems(b, writer, path));
    return tried.find((p) => p.length === 0) ?? tried[0]!;
  }

  const readerTypes = typesOf(reader);
  const writerTypes = typesOf(writer);
  for (const t of writerTypes)
    if (!accepts(readerTypes, t)) out.push({ path: at, rule: `type ${t} is no longer accepted` });

  const readerValues = valuesOf(reader);
  if (readerValues) {
    const writerValues = valuesOf(writer);
    if (!writerValues) out.push({ path: at, rule: 'the reader accepts only listed values; the writer any' });
    else
      for (const v of writerValues)
        if (!readerValues.some((r) => r === v))
          out.push({ path: at, rule: `value ${JSON.stringify(v)} is no longer accepted` });
  }

  // Bounds matter only for values of their kind that the writer can write.
  const writes = (...kinds: string[]) => kinds.some((k) => writerTypes.has(k));
  const bound = (key: string, kind: boolean, tighter: (r: number, w: number) => boolean, what: string) => {
    const r = reader[key];
    if (typeof r !== 'number' || !kind) return;
    const w = writer[key];
    if (typeof w !== 'number') out.push({ path: at, rule: `${key} added: ${r}` });
    else if (tighter(r, w)) out.push({ path: at, rule: `${what} ${w} -> ${r}` });
  };
  const strings = writes('string');
  const numbers = writes('integer', 'number');
  const arrays = writes('array');
  bound('maxLength', strings, (r, w) => r < w, 'maxLength lowered');
  bound('minLength', strings, (r, w) => r > w, 'minLength raised');
  bound('maximum', numbers, (r, w) => r < w, 'maximum lowered');
  bound('minimum', numbers, (r, w) => r > w, 'minimum raised');
  bound('maxItems', arrays, (r, w) => r < w, 'maxItems lowered');
  bound('minItems', arrays, (r, w) => r > w, 'minItems raised');
  for (const key of ['pattern', 'format'] as const)
    if (strings && reader[key] !== undefined && reader[key] !== writer[key])
      out.push({
        path: at,
        rule: `${key} ${writer[key] === undefined ? 'added' : 'changed'}: ${String(reader[key])}`,
      });

  if (writerTypes.has('object') || readerTypes.has('object'))
    out.push(...objectProblems(reader, writer, path));
  if (reader.items !== undefined) {
    const w = (writer.items as Schema | undefined) ?? {};
    out.push(...readerProblems(reader.items as Schema, w, `${path}/items`));
  }
  return out;
}

function objectProblems(reader: Schema, writer: Schema, path: string): Omit<CompatProblem, 'direction'>[] {
  const out: Omit<CompatProblem, 'direction'>[] = [];
  const rProps = (reader.properties ?? {}) as Record<string, Schema>;
  const wProps = (writer.properties ?? {}) as Record<string, Schema>;
  const wRequired = new Set((writer.required ?? []) as string[]);
  for (const field of (reader.required ?? []) as string[])
    if (!wRequired.has(field))
      out.push({
        path: `${path}/${field}`,
        rule: 'required by the reader, optional or absent for the writer',
      });
  // A field only the reader describes is taken as one the writer never wrote (events carry only the fields
  // of their version), not as "anything": adding an optional field is compatible, as in Avro.
  for (const [field, schema] of Object.entries(rProps)) {
    const w = wProps[field];
    if (w) out.push(...readerProblems(schema, w, `${path}/${field}`));
  }
  if (reader.additionalProperties === false)
    for (const field of Object.keys(wProps))
      if (!(field in rProps)) out.push({ path: `${path}/${field}`, rule: 'removed from a closed object' });
  return out;
}

const ALL_TYPES = ['null', 'boolean', 'integer', 'number', 'string', 'array', 'object'];

/** The JSON types a schema allows (from type, const or enum; all when unconstrained). */
function typesOf(s: Schema): Set<string> {
  if (Array.isArray(s.anyOf)) return new Set((s.anyOf as Schema[]).flatMap((b) => [...typesOf(b)]));
  if (typeof s.type === 'string') return new Set([s.type]);
  if (Array.isArray(s.type)) return new Set(s.type as string[]);
  const values = valuesOf(s);
  if (values) return new Set(values.map(jsonType));
  return new Set(ALL_TYPES);
}

const jsonType = (v: unknown) =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v;

const accepts = (types: Set<string>, t: string) => types.has(t) || (t === 'integer' && types.has('number'));
const overlaps = (reader: Set<string>, writer: Set<string>) => [...writer].some((t) => accepts(reader, t));

function valuesOf(s: Schema): unknown[] | undefined {
  if ('const' in s) return [s.const];
  return Array.isArray(s.enum) ? s.enum : undefined;
}

function dedupe<T>(list: T[]): T[] {
  const seen = new Set<string>();
  return list.filter((x) => {
    const k = JSON.stringify(x);
    return seen.has(k) ? false : (seen.add(k), true);
  });
}
