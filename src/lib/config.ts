import { readFileSync } from 'node:fs';
import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { errnoCode, UserError } from './errors.ts';

/**
 * Loads a YAML file and validates it against a zod schema. Every error names the file, the line
 * and column, the field path, and what was expected, e.g.
 *   cluster.yaml:12:5: vservers.web.memory: "12XB" is not a size (expected ...)
 * Nothing is changed anywhere when it throws: callers validate before they act.
 */
export function loadYamlFile<S extends z.ZodType>(file: string, schema: S): z.infer<S> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new UserError(`${file}: no such file`);
    throw new UserError(`${file}: cannot read: ${(err as Error).message}`);
  }
  return parseYaml(text, file, schema);
}

export function parseYaml<S extends z.ZodType>(text: string, file: string, schema: S): z.infer<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = lineCounter.linePos(e.pos[0]);
    throw new UserError(`${file}:${pos.line}:${pos.col}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const result = schema.safeParse(doc.toJS());
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map(String);
  // For an unknown key, point at the key itself rather than at the object holding it.
  const located = issue.code === 'unrecognized_keys' ? [...path, String(issue.keys[0])] : path;
  const node = nodeAt(doc.contents as YamlNode | null, located);
  const pos = lineCounter.linePos(node?.range?.[0] ?? 0);
  const field = path.length ? path.join('.') : '(top level)';
  throw new UserError(`${file}:${pos.line}:${pos.col}: ${field}: ${describeIssue(issue)}`);
}

/** The deepest YAML node along `path` that exists (a key when its value is empty), for its position. */
function nodeAt(root: YamlNode | null, path: string[]): YamlNode | null {
  let node: YamlNode | null = root;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => String((p.key as { value?: unknown })?.value ?? p.key) === key);
      if (!pair) return node;
      node = (pair.value as YamlNode | null) ?? (pair.key as YamlNode);
    } else if (isSeq(node)) {
      const item = node.items[Number(key)];
      if (!item) return node;
      node = item as YamlNode;
    } else {
      return node;
    }
  }
  return node;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'invalid_type':
      return `expected ${issue.expected}${'input' in issue && issue.input === undefined ? ' (missing)' : ''}`;
    default:
      return issue.message;
  }
}
