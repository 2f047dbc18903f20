/**
 * The published versions of the event schemas, kept in the repository under `schemas/events/<type>/v<N>.json`
 * (what consumers elsewhere, a schema registry or a code generator read), and the check that keeps them
 * honest: each type's current schema is its published current version, and each version is compatible with
 * every one before it as the type declares (transitively: events of every retained version are still read).
 * `taskflow schemas check` and the test suite run the check; `taskflow schemas publish` writes the file of a
 * new version.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compatibilityProblems } from './schema-compat.ts';
import { EVENT_TYPES, publishedSchema, type EventType } from './schemas.ts';

/** `schemas/events` of this checkout (from src/contracts or dist/contracts alike). */
export const PUBLISHED_DIR = fileURLToPath(new URL('../../schemas/events/', import.meta.url));

const fileOf = (dir: string, type: string, version: number) => join(dir, type, `v${version}.json`);
const text = (schema: unknown) => `${JSON.stringify(schema, null, 2)}\n`;

/** The versions of `type` published in `dir`, ascending. */
export function publishedVersions(dir: string, type: string): number[] {
  if (!existsSync(join(dir, type))) return [];
  return readdirSync(join(dir, type))
    .map((f) => /^v([1-9][0-9]*)\.json$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

export function readPublished(dir: string, type: string, version: number): Record<string, unknown> {
  return JSON.parse(readFileSync(fileOf(dir, type, version), 'utf8')) as Record<string, unknown>;
}

/**
 * What the check finds: `unpublished` (a new version not written yet: what `publish` is for) or `invalid`
 * (a version that goes down or skips, an incompatible change, a change that kept its version, a published
 * history that is not compatible).
 */
export interface SchemaProblem {
  type: EventType;
  kind: 'unpublished' | 'invalid';
  message: string;
}

/** One line per problem, naming the type, the version, the field and the rule; empty when all is well. */
export function checkPublishedSchemas(dir = PUBLISHED_DIR): string[] {
  return schemaProblems(dir).map((p) => p.message);
}

export function schemaProblems(dir = PUBLISHED_DIR): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  for (const type of Object.keys(EVENT_TYPES) as EventType[]) {
    const { version, compatibility } = EVENT_TYPES[type];
    const versions = publishedVersions(dir, type);
    const current = publishedSchema(type);
    const latest = versions.at(-1) ?? 0;
    const invalid = (message: string) => out.push({ type, kind: 'invalid', message });
    // Each published version read once (the checks below compare every pair).
    const published = new Map(versions.map((v) => [v, readPublished(dir, type, v)]));
    /** The current schema against each published version up to `upTo`; how many problems it reported. */
    const againstPublished = (upTo: number, as: string) => {
      let problems = 0;
      for (const [v, schema] of published)
        if (v <= upTo)
          for (const p of compat(schema, current, compatibility)) {
            invalid(`${type} v${v} -> ${as}: ${p}`);
            problems++;
          }
      return problems;
    };
    if (version < latest)
      invalid(`${type}: version ${version} is older than the published v${latest}; versions only go up`);
    else if (version > latest + 1)
      invalid(`${type}: version ${version} skips v${latest + 1} (the last published is v${latest})`);
    else if (version === latest + 1) {
      // Against every published version, not only the last (transitive): events of each are still on the
      // topics and in dead-letter topics (30 days), and a field removed in one version and re-added with
      // another type in the next passed two checks of neighbours while the oldest events failed the newest.
      if (!againstPublished(latest, `v${version}`))
        out.push({
          type,
          kind: 'unpublished',
          message: `${type}: v${version} is not published yet; run \`taskflow schemas publish\` to publish v${version}`,
        });
    } else if (text(published.get(version)!) !== text(current)) {
      if (!againstPublished(version, '(changed)'))
        invalid(
          `${type}: the schema changed compatibly but is still called v${version}; set its version to ${version + 1} and run \`taskflow schemas publish\``,
        );
    }
    // The history itself: every published version compatible with every one before it (transitive).
    const history = [...published];
    for (let j = 1; j < history.length; j++)
      for (let i = 0; i < j; i++) {
        const [[a, older], [b, newer]] = [history[i]!, history[j]!];
        for (const p of compat(older, newer, compatibility))
          invalid(`${type} v${a} -> v${b} (published): ${p}`);
      }
  }
  return out;
}

function compat(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
  mode: 'backward' | 'forward' | 'full',
) {
  return compatibilityProblems(before, after, mode).map(
    (p) =>
      `${p.path}: ${p.rule} (${p.direction === 'backward' ? 'new consumers reading old events' : 'consumers of the old version reading new events'}; ${mode} compatibility)`,
  );
}

/**
 * Writes the current version of every type that is not published yet, if the check passes otherwise;
 * returns the files written. A published version is never rewritten.
 */
export function publishSchemas(dir = PUBLISHED_DIR): { written: string[]; problems: string[] } {
  const problems = schemaProblems(dir)
    .filter((p) => p.kind === 'invalid')
    .map((p) => p.message);
  if (problems.length) return { written: [], problems };
  const written: string[] = [];
  for (const type of Object.keys(EVENT_TYPES) as EventType[]) {
    const file = fileOf(dir, type, EVENT_TYPES[type].version);
    if (existsSync(file)) continue;
    mkdirSync(join(dir, type), { recursive: true });
    writeFileSync(file, text(publishedSchema(type)));
    written.push(file);
  }
  return { written, problems: [] };
}
