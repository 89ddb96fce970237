/**
 * The dependency direction of src/ (DESIGN.md §6), checked on every run so it stays true: lower
 * layers never import higher ones. Reads the import lines of every file under src/ (static, type-only,
 * re-exports and dynamic import()) and compares the areas they join with the table below.
 */
import assert from 'node:assert/strict';
import { globSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');

interface ImportEdge {
  /** Importing file, relative to the repository (src/volume/daemon.ts). */
  from: string;
  /** Imported file, relative to the repository. */
  to: string;
}

/**
 * What an area may import besides itself and node:/npm packages: `only` lists every project area it
 * may use; `never` lists the ones it must not. `files` allows single files of another area.
 */
interface AreaRule {
  only?: string[];
  never?: string[];
  files?: string[];
}

const RULES: Record<string, AreaRule> = {
  lib: { only: [] },
  fuse: { only: ['lib'] },
  // cluster.yaml's parser embeds the vserver's own schema (zod + lib, checked pure below).
  cluster: { only: ['lib'], files: ['src/vserver/definition.ts'] },
  sim: { only: ['cluster', 'lib'] },
  volume: { never: ['agent', 'cluster', 'cli', 'vserver', 'backup', 'lab', 'sim'] },
  vserver: { never: ['agent', 'cluster', 'cli', 'backup', 'lab', 'sim'] },
};
/** Only the CLI is at the top: no other area imports it (spawning its main file is not an import). */
const TOP = 'cli';

/** The area of a path under src/ (src/volume/replication/x.ts -> volume), or null outside src/. */
function areaOf(path: string): string | null {
  const parts = path.split('/');
  return parts[0] === 'src' && parts.length > 2 ? parts[1]! : null;
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm;

/** The project files one source file imports (relative specifiers only; packages and node: are not ours). */
function importsOf(file: string, text: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const m of text.matchAll(SPECIFIER)) {
    const spec = m[1]!;
    if (spec.startsWith('.')) edges.push({ from: file, to: normalize(join(dirname(file), spec)) });
  }
  return edges;
}

/** Every edge that breaks RULES or TOP, as `from -> to` lines. */
function layeringViolations(edges: ImportEdge[]): string[] {
  const out: string[] = [];
  for (const e of edges) {
    const a = areaOf(e.from);
    const b = areaOf(e.to);
    if (a === null || b === null || a === b) continue;
    const rule = RULES[a];
    const allowedFile = rule?.files?.includes(e.to) ?? false;
    const bad =
      (b === TOP && a !== TOP) ||
      (!allowedFile && rule?.only !== undefined && !rule.only.includes(b)) ||
      (rule?.never?.includes(b) ?? false);
    if (bad) out.push(`${e.from} -> ${e.to}`);
  }
  return out;
}

function sourceEdges(): ImportEdge[] {
  return globSync('src/**/*.ts', { cwd: ROOT }).flatMap((f) =>
    importsOf(f, readFileSync(join(ROOT, f), 'utf8')),
  );
}

test('the import parser sees static, type-only, multi-line, re-export and dynamic imports', () => {
  const text = [
    "import { a } from '../lib/a.ts';",
    "import type { B } from '../volume/b.ts';",
    'import {\n  c,\n  d,\n} from "./c.ts";',
    "export { e } from '../fuse/e.ts';",
    "const m = await import('../agent/m.ts');",
    "import '../cli/side-effect.ts';",
    "import { readFileSync } from 'node:fs';",
    "import { z } from 'zod';",
  ].join('\n');
  assert.deepEqual(
    importsOf('src/x/y.ts', text).map((e) => e.to),
    [
      'src/lib/a.ts',
      'src/volume/b.ts',
      'src/x/c.ts',
      'src/fuse/e.ts',
      'src/agent/m.ts',
      'src/cli/side-effect.ts',
    ],
  );
});

test('the rules catch each kind of wrong direction', () => {
  const cases: [from: string, to: string, wrong: boolean][] = [
    ['src/fuse/session.ts', 'src/lib/log.ts', false],
    ['src/fuse/session.ts', 'src/volume/block-device.ts', true],
    ['src/lib/log.ts', 'src/volume/layout.ts', true],
    ['src/volume/daemon.ts', 'src/fuse/session.ts', false],
    ['src/volume/replication/peer-link.ts', 'src/agent/env.ts', true],
    ['src/vserver/manager.ts', 'src/volume/lifecycle.ts', false],
    ['src/vserver/manager.ts', 'src/cluster/types.ts', true],
    ['src/cluster/config.ts', 'src/vserver/definition.ts', false],
    ['src/cluster/config.ts', 'src/vserver/manager.ts', true],
    ['src/cluster/manager.ts', 'src/agent/agent.ts', true],
    ['src/sim/env.ts', 'src/cluster/node.ts', false],
    ['src/agent/agent.ts', 'src/cli/main.ts', true],
    ['src/agent/agent.ts', 'src/volume/control.ts', false],
    ['src/cli/volume.ts', 'src/agent/client.ts', false],
  ];
  for (const [from, to, wrong] of cases) {
    assert.equal(layeringViolations([{ from, to }]).length, wrong ? 1 : 0, `${from} -> ${to}`);
  }
});

test('src/ follows the dependency direction', () => {
  const edges = sourceEdges();
  assert.ok(edges.length > 300, `only ${edges.length} imports found: the parser is broken`);
  assert.ok(
    edges.some((e) => e.from.startsWith('src/volume/') && e.to.startsWith('src/fuse/')),
    'volume -> fuse expected among the edges',
  );
  assert.deepEqual(layeringViolations(edges), []);
  // The files other areas may borrow stay as low as lib.
  const borrowed = Object.values(RULES).flatMap((r) => r.files ?? []);
  const beneath = edges.filter((e) => borrowed.includes(e.from) && areaOf(e.to) !== 'lib');
  assert.deepEqual(beneath, [], 'a borrowed file imports only lib');
});
