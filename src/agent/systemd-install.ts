/**
 * What `cvserver agent install` and `uninstall` do to a machine, decided from what is there (pure);
 * src/cli/agent-install.ts reads the files, runs the plan and reports it.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const UNIT_NAME = 'cvserver-agent.service';
/** The unit as shipped in the repository (the single copy: install writes it as it is). */
export const SHIPPED_UNIT = fileURLToPath(
  new URL('../../dist/systemd/cvserver-agent.service', import.meta.url),
);

/** Paths as the machine (or image) being installed sees them; the CLI puts them under --root. */
export const INSTALL_PATHS = {
  unit: `/etc/systemd/system/${UNIT_NAME}`,
  env: '/etc/cvserver/agent.env',
  /** `systemctl enable` makes this link (the unit's WantedBy=multi-user.target). */
  wants: `/etc/systemd/system/multi-user.target.wants/${UNIT_NAME}`,
  /** What the unit's ExecStart runs (scripts/setup links it). */
  command: '/usr/local/bin/cvserver',
  defaultConfig: '/etc/cvserver/cluster.yaml',
} as const;

/** A path of the machine, under `root` ("/" for the machine itself). */
export function under(root: string, path: string): string {
  return root === '/' ? path : join(root, path);
}

/** The unit's EnvironmentFile: which cluster.yaml, which node. */
export function envFileText(config: string, node: string): string {
  return [
    '# Written by `cvserver agent install`: read by cvserver-agent.service (ExecStart).',
    `CVSERVER_CONFIG=${config}`,
    `CVSERVER_NODE=${node}`,
    '',
  ].join('\n');
}

/**
 * Why `value` cannot go into the environment file as it is, if it cannot: systemd's parser would
 * read quotes, backslashes and `$` differently, and a line break would end it.
 */
export function envValueProblem(value: string): string | undefined {
  if (!/^[A-Za-z0-9_./@+:=,-]+$/.test(value))
    return "only letters, digits and _ . / @ + : = , - can be written to the unit's environment file";
  return undefined;
}

export type FileAction = 'create' | 'replace' | 'unchanged' | 'conflict';

/** What to do to a file that should hold `wanted`; a file that differs is replaced only with `force`. */
export function fileAction(current: string | null, wanted: string, force: boolean): FileAction {
  if (current === null) return 'create';
  if (current === wanted) return 'unchanged';
  return force ? 'replace' : 'conflict';
}

/** How the service manager can be reached: running as PID 1, absent, or not to be used (--root). */
export type Systemd = 'running' | 'not-running' | 'offline-root';

export interface InstallInput {
  systemd: Systemd;
  unit: FileAction;
  env: FileAction;
  enable: boolean;
  now: boolean;
  /** The wants link's current target, null when absent. */
  wantsLink: string | null;
}

export interface InstallPlan {
  /** systemctl runs, in order (only when systemd runs). */
  commands: string[][];
  /** Link wants → unit made by us (systemd not running: what `systemctl enable` would do). */
  link: boolean;
  notes: string[];
}

export function planInstall(i: InstallInput): InstallPlan {
  const notes: string[] = [];
  const changed = i.unit === 'create' || i.unit === 'replace' || i.env === 'create' || i.env === 'replace';
  if (i.systemd === 'running') {
    const commands = [['systemctl', 'daemon-reload']];
    if (i.enable || i.now)
      commands.push([
        'systemctl',
        i.enable ? 'enable' : 'start',
        ...(i.enable && i.now ? ['--now'] : []),
        UNIT_NAME,
      ]);
    if (changed && i.now)
      notes.push(
        `an agent already running keeps its old settings until restarted (systemctl restart ${UNIT_NAME}: its vservers and volumes keep running)`,
      );
    if (!i.enable && !i.now) notes.push(`start it with: systemctl enable --now ${UNIT_NAME}`);
    return { commands, link: false, notes };
  }
  const link = i.enable && i.wantsLink !== INSTALL_PATHS.unit;
  if (i.systemd === 'not-running') {
    notes.push(
      `systemd is not running on this machine (PID 1 is not systemd): nothing can be started here; under systemd: systemctl daemon-reload && systemctl enable --now ${UNIT_NAME}`,
    );
    if (i.now) notes.push('--now: cannot start the agent without systemd');
  } else {
    notes.push('installed under --root: no systemctl run');
    if (i.now) notes.push('--now: ignored with --root');
  }
  return { commands: [], link, notes };
}

export interface UninstallInput {
  systemd: Systemd;
  /** The installed unit: null when absent. */
  unit: FileAction | null;
  envPresent: boolean;
  wantsLink: string | null;
  now: boolean;
}

export interface UninstallPlan {
  /** systemctl runs before the files go. */
  before: string[][];
  /** systemctl runs after. */
  after: string[][];
  removeUnit: boolean;
  removeEnv: boolean;
  removeLink: boolean;
  notes: string[];
}

export function planUninstall(i: UninstallInput): UninstallPlan {
  const running = i.systemd === 'running';
  const notes: string[] = [];
  if (running && !i.now)
    notes.push(
      `an agent running now keeps running until stopped (systemctl stop ${UNIT_NAME}); once stopped, its guard fences the node's vservers when the lease runs out`,
    );
  if (!running && i.now) notes.push('--now: systemd is not running here, nothing to stop');
  return {
    before:
      running && i.unit !== null ? [['systemctl', 'disable', ...(i.now ? ['--now'] : []), UNIT_NAME]] : [],
    after: running ? [['systemctl', 'daemon-reload']] : [],
    removeUnit: i.unit !== null && i.unit !== 'conflict',
    removeEnv: i.envPresent,
    // systemctl disable removes the link itself; without systemd, it is ours to remove.
    removeLink: !running && i.wantsLink !== null,
    notes,
  };
}
