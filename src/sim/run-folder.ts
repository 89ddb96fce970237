import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadScenario } from './scenario.ts';
import { runScript } from './simulator.ts';

export interface FolderResult {
  folder: string;
  ok: boolean;
  log: string[];
  violations: string[];
  /** Lines of a unified-style diff against log.expect (empty when equal). */
  diff: string[];
  updated: boolean;
  /** Every line, the nodes' decisions included (only with `trace`). */
  trace: string[];
}

/** Runs the scenario in `folder` and compares its log with `log.expect` (or rewrites it with `update`). */
export function runFolder(folder: string, update = false, trace = false): FolderResult {
  const { cfg, script } = loadScenario(folder);
  const run = runScript(cfg, script, { trace });
  const { log, violations } = run;
  const lines = [...log, ...violations.map((v) => `INVARIANT VIOLATED: ${v}`)];
  const file = `${folder}/log.expect`;
  if (update) {
    writeFileSync(file, `${lines.join('\n')}\n`);
    return {
      folder,
      ok: violations.length === 0,
      log: lines,
      violations,
      diff: [],
      updated: true,
      trace: run.trace,
    };
  }
  const expected = existsSync(file) ? readFileSync(file, 'utf8').replace(/\n$/, '').split('\n') : [];
  const diff = diffLines(expected, lines);
  return {
    folder,
    ok: diff.length === 0 && violations.length === 0,
    log: lines,
    violations,
    diff,
    updated: false,
    trace: run.trace,
  };
}

/** A small LCS line diff: "-" expected only, "+" actual only. */
export function diffLines(a: string[], b: string[]): string[] {
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  let changed = false;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push(`  ${a[i]}`);
      i++;
      j++;
    } else if (j < m && (i >= n || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) {
      out.push(`+ ${b[j]}`);
      changed = true;
      j++;
    } else {
      out.push(`- ${a[i]}`);
      changed = true;
      i++;
    }
  }
  return changed ? out : [];
}
