import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { loadYamlFile } from '../lib/config.ts';
import { UserError } from '../lib/errors.ts';

/** cluster.yaml of a scenario folder. */
export const clusterSchema = z.strictObject({
  nodes: z.array(z.string().regex(/^[a-z][a-z0-9-]*$/)).min(1),
  /** Nodes that are switched off at time 0. */
  down: z.array(z.string()).default([]),
  /** Log the nodes' decisions (`n1: ...` lines) too: for scenarios about the node's side. */
  node_log: z.boolean().default(false),
  policy: z
    .strictObject({
      lease_ttl: z.number().int().positive().default(10),
      max_restarts: z.number().int().min(0).default(1),
      max_relocations: z.number().int().min(0).default(1),
      failure_timeout: z.number().int().positive().default(300),
      failback: z.boolean().default(false),
    })
    .prefault({}),
  vservers: z.record(
    z.string().regex(/^[a-z][a-z0-9-]*$/),
    z.strictObject({
      desired: z.enum(['started', 'stopped', 'disabled']).default('started'),
      replicas: z.array(z.string()).min(1),
      preferred: z.array(z.string()).default([]),
      avoid: z.array(z.string()).default([]),
      anti_affinity: z.array(z.string()).default([]),
    }),
  ),
});
export type ClusterConfig = z.infer<typeof clusterSchema>;

export type ScriptCommand =
  | { kind: 'power'; on: boolean; node: string }
  | { kind: 'network'; up: boolean; node: string }
  | { kind: 'store'; up: boolean; node: string }
  | { kind: 'agent'; hung: boolean; node: string }
  | { kind: 'fail-health'; vserver: string }
  | { kind: 'break'; vserver: string; broken: boolean }
  | { kind: 'migrate'; vserver: string; node: string }
  | { kind: 'standby'; node: string; on: boolean }
  | { kind: 'maintenance'; on: boolean }
  | { kind: 'set'; vserver: string; desired: 'started' | 'stopped' | 'disabled' }
  | { kind: 'clear'; vserver: string }
  | { kind: 'replica'; vserver: string; node: string; upToDate: boolean }
  | { kind: 'failover' }
  | { kind: 'end' };

export interface TimedCommand {
  at: number;
  text: string;
  cmd: ScriptCommand;
}

const GRAMMAR = [
  'power off|on NODE',
  'network cut|restore NODE',
  'store cut|restore NODE',
  'agent hang|resume NODE',
  'fail health VSERVER',
  'break|fix VSERVER',
  'migrate VSERVER NODE',
  'standby|unstandby NODE',
  'maintenance on|off',
  'set VSERVER started|stopped|disabled',
  'clear VSERVER',
  'replica VSERVER NODE stale|uptodate',
  'manager failover',
  'end',
];

/** Parses a `commands` file: lines `at SECONDS COMMAND`, `#` comments. */
export function parseCommands(text: string, file: string, cfg: ClusterConfig): TimedCommand[] {
  const out: TimedCommand[] = [];
  const nodes = new Set(cfg.nodes);
  const vservers = new Set(Object.keys(cfg.vservers));
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const where = `${file}:${i + 1}`;
    const m = /^at\s+(\d+)\s+(.+)$/.exec(line);
    if (!m) throw new UserError(`${where}: expected "at SECONDS COMMAND", got "${line}"`);
    const w = m[2]!.split(/\s+/);
    const node = (s: string | undefined) => {
      if (!s || !nodes.has(s))
        throw new UserError(`${where}: unknown node "${s ?? ''}" (nodes: ${cfg.nodes.join(', ')})`);
      return s;
    };
    const vs = (s: string | undefined) => {
      if (!s || !vservers.has(s)) throw new UserError(`${where}: unknown vserver "${s ?? ''}"`);
      return s;
    };
    const words = w.join(' ');
    let cmd: ScriptCommand | undefined;
    if (/^power (off|on) \S+$/.test(words)) cmd = { kind: 'power', on: w[1] === 'on', node: node(w[2]) };
    else if (/^network (cut|restore) \S+$/.test(words))
      cmd = { kind: 'network', up: w[1] === 'restore', node: node(w[2]) };
    else if (/^store (cut|restore) \S+$/.test(words))
      cmd = { kind: 'store', up: w[1] === 'restore', node: node(w[2]) };
    else if (/^agent (hang|resume) \S+$/.test(words))
      cmd = { kind: 'agent', hung: w[1] === 'hang', node: node(w[2]) };
    else if (/^fail health \S+$/.test(words)) cmd = { kind: 'fail-health', vserver: vs(w[2]) };
    else if (/^(break|fix) \S+$/.test(words))
      cmd = { kind: 'break', vserver: vs(w[1]), broken: w[0] === 'break' };
    else if (/^migrate \S+ \S+$/.test(words)) cmd = { kind: 'migrate', vserver: vs(w[1]), node: node(w[2]) };
    else if (/^(standby|unstandby) \S+$/.test(words))
      cmd = { kind: 'standby', node: node(w[1]), on: w[0] === 'standby' };
    else if (/^maintenance (on|off)$/.test(words)) cmd = { kind: 'maintenance', on: w[1] === 'on' };
    else if (/^set \S+ (started|stopped|disabled)$/.test(words))
      cmd = { kind: 'set', vserver: vs(w[1]), desired: w[2] as 'started' | 'stopped' | 'disabled' };
    else if (/^clear \S+$/.test(words)) cmd = { kind: 'clear', vserver: vs(w[1]) };
    else if (/^replica \S+ \S+ (stale|uptodate)$/.test(words))
      cmd = { kind: 'replica', vserver: vs(w[1]), node: node(w[2]), upToDate: w[3] === 'uptodate' };
    else if (words === 'manager failover') cmd = { kind: 'failover' };
    else if (words === 'end') cmd = { kind: 'end' };
    if (!cmd)
      throw new UserError(`${where}: unknown command "${words}" (expected one of: ${GRAMMAR.join('; ')})`);
    out.push({ at: Number(m[1]), text: words, cmd });
  });
  return out.sort((a, b) => a.at - b.at);
}

export function loadScenario(dir: string): { cfg: ClusterConfig; script: TimedCommand[] } {
  const cfg = loadYamlFile(`${dir}/cluster.yaml`, clusterSchema);
  for (const [name, v] of Object.entries(cfg.vservers)) {
    for (const n of [...v.replicas, ...v.preferred, ...v.avoid])
      if (!cfg.nodes.includes(n))
        throw new UserError(`${dir}/cluster.yaml: vservers.${name}: unknown node "${n}"`);
    for (const o of v.anti_affinity)
      if (!(o in cfg.vservers))
        throw new UserError(`${dir}/cluster.yaml: vservers.${name}.anti_affinity: unknown vserver "${o}"`);
  }
  let text = '';
  try {
    text = readFileSync(`${dir}/commands`, 'utf8');
  } catch {
    throw new UserError(`${dir}/commands: no such file`);
  }
  return { cfg, script: parseCommands(text, `${dir}/commands`, cfg) };
}
