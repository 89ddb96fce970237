import { createHash } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { stateDir } from '../lib/paths.ts';
import type { VserverDefinition } from './definition.ts';

/** Where one vserver's files live: <state>/vservers/<name>/ (definition, bundle, console log, events). */
export interface VserverPaths {
  dir: string;
  definition: string;
  bundle: string;
  config: string;
  console: string;
  events: string;
  runtime: string;
}

export function vserversDir(): string {
  return join(stateDir(), 'vservers');
}
export function crunRoot(): string {
  return join(stateDir(), 'crun');
}
export function templateCacheDir(): string {
  return process.env.CVSERVER_TEMPLATE_CACHE ?? join(stateDir(), 'templates');
}
/** The cgroup of a vserver, unique per state dir so two test runs never share one. */
export function cgroupsPath(name: string): string {
  return `/cvserver-${createHash('sha256').update(stateDir()).digest('hex').slice(0, 8)}/${name}`;
}

export function vserverPaths(name: string): VserverPaths {
  const dir = join(vserversDir(), name);
  return {
    dir,
    definition: join(dir, 'definition.json'),
    bundle: join(dir, 'bundle'),
    config: join(dir, 'bundle', 'config.json'),
    console: join(dir, 'console.log'),
    events: join(dir, 'events.jsonl'),
    runtime: join(dir, 'runtime.json'),
  };
}

export function listNames(): string[] {
  if (!existsSync(vserversDir())) return [];
  return readdirSync(vserversDir())
    .filter((n) => existsSync(vserverPaths(n).definition))
    .sort();
}

export function readDefinition(name: string): VserverDefinition | undefined {
  const p = vserverPaths(name).definition;
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as VserverDefinition) : undefined;
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileSync(`${file}.tmp`, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

/** What the supervisor and the commands share about a vserver besides crun's own state. */
export interface RuntimeRecord {
  desired: 'running' | 'stopped';
  supervisorPid?: number;
  restarts: number[];
  health?: Record<string, string>;
  oomKills?: number;
}

export function readRuntime(name: string): RuntimeRecord {
  const p = vserverPaths(name).runtime;
  if (!existsSync(p)) return { desired: 'stopped', restarts: [] };
  return JSON.parse(readFileSync(p, 'utf8')) as RuntimeRecord;
}
export function updateRuntime(name: string, change: (r: RuntimeRecord) => RuntimeRecord): RuntimeRecord {
  const next = change(readRuntime(name));
  writeJsonAtomic(vserverPaths(name).runtime, next);
  return next;
}

export interface VserverEvent {
  time: string;
  vserver: string;
  type: string;
  reason: string;
}

/** Every state change of a vserver is an event with a reason, appended as one JSON line. */
export function recordEvent(name: string, type: string, reason: string, now = new Date()): VserverEvent {
  const ev = { time: now.toISOString(), vserver: name, type, reason };
  const p = vserverPaths(name);
  mkdirSync(p.dir, { recursive: true });
  appendFileSync(p.events, `${JSON.stringify(ev)}\n`);
  return ev;
}

export function readEvents(name: string): VserverEvent[] {
  const p = vserverPaths(name).events;
  if (!existsSync(p)) return [];
  return readFileSync(p, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as VserverEvent);
}

export const CONSOLE_MAX_BYTES = 1024 * 1024;

/**
 * Rotates the console log by copy-and-truncate: the container holds the file open (O_APPEND),
 * so it keeps writing to the same file, which starts again from empty. One old copy is kept.
 */
export function rotateConsole(name: string, maxBytes = CONSOLE_MAX_BYTES): boolean {
  const p = vserverPaths(name).console;
  if (!existsSync(p) || statSync(p).size <= maxBytes) return false;
  writeFileSync(`${p}.1`, readFileSync(p));
  writeFileSync(p, '');
  return true;
}
