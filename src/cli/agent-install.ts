import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { Command } from 'commander';
import {
  envFileText,
  envValueProblem,
  type FileAction,
  fileAction,
  INSTALL_PATHS,
  planInstall,
  planUninstall,
  SHIPPED_UNIT,
  type Systemd,
  UNIT_NAME,
  under,
} from '../agent/systemd-install.ts';
import { loadClusterConfig } from '../cluster/config.ts';
import { errnoCode, errorMessage, UserError } from '../lib/errors.ts';
import { writeFileAtomic } from '../lib/json-file.ts';
import { emit } from './output.ts';

interface InstallOptions {
  config?: string;
  node: string;
  root?: string;
  enable?: boolean;
  now?: boolean;
  force?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

/** `cvserver agent install` and `cvserver agent uninstall`: the systemd unit that keeps the agent running. */
export function registerAgentInstallCommands(agent: Command): void {
  allowSubcommandsWithoutConfig(agent);
  const agentOptions =
    '\n--config FILE (default /etc/cvserver/cluster.yaml) and --node NAME (default: the host name) are given as for the agent itself:\n  cvserver agent install --config /etc/cvserver/cluster.yaml --node n1 --enable --now';
  agent
    .command('install')
    .description(
      `install ${UNIT_NAME} (systemd keeps the agent running, restarts it when it hangs) and its environment file /etc/cvserver/agent.env`,
    )
    .option('--enable', 'start it at boot (systemctl enable)')
    .option('--now', 'start it now (with --enable: systemctl enable --now)')
    .option('--force', 'replace a unit or environment file that differs from what would be written')
    .option(
      '--root <dir>',
      'install into this directory as the root of the machine (an image; tests); runs no systemctl',
    )
    .option('--dry-run', 'say what would be written and run, change nothing')
    .option('--json', 'machine-readable output')
    .addHelpText('after', agentOptions)
    .action(function (this: Command) {
      const o = this.optsWithGlobals<InstallOptions>();
      const r = install(o);
      emit(!!o.json, r, () => formatInstall(r));
    });

  agent
    .command('uninstall')
    .description(`remove ${UNIT_NAME} and its environment file (the agent is not stopped unless --now)`)
    .option(
      '--now',
      'stop the agent too (systemctl disable --now): its guard then fences the vservers at lease expiry',
    )
    .option('--force', 'remove the unit even if it differs from the one this cvserver ships')
    .option('--root <dir>', 'uninstall from this directory as the root of the machine; runs no systemctl')
    .option('--dry-run', 'say what would be removed and run, change nothing')
    .option('--json', 'machine-readable output')
    .action(function (this: Command) {
      const o = this.optsWithGlobals<InstallOptions>();
      const r = uninstall(o);
      emit(!!o.json, r, () => formatUninstall(r));
    });
}

/**
 * The agent's --config is required for the agent itself only, but Commander checks a parent's
 * required options before any of its subcommands (install, uninstall, guard) runs: the check is moved
 * to the agent's own action.
 */
function allowSubcommandsWithoutConfig(agent: Command): void {
  const config = agent.options.find((opt) => opt.long === '--config');
  if (!config?.mandatory) return;
  config.mandatory = false;
  agent.hook('preAction', (cmd, action) => {
    if (action === agent && cmd.getOptionValue('config') === undefined)
      agent.error(`error: required option '${config.flags}' not specified`, {
        code: 'commander.missingMandatoryOptionValue',
      });
  });
}

interface FileResult {
  path: string;
  action: FileAction;
}

export interface InstallResult {
  dryRun: boolean;
  root: string;
  systemd: Systemd;
  config: string;
  node: string;
  unit: FileResult;
  env: FileResult;
  /** The wants link made by this command (systemd not running or --root), if any. */
  linked: string | null;
  commands: string[][];
  warnings: string[];
  notes: string[];
}

function systemdState(root: string): Systemd {
  if (root !== '/') return 'offline-root';
  // sd_booted(3): systemd as PID 1 makes this directory.
  return existsSync('/run/systemd/system') ? 'running' : 'not-running';
}

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new UserError(`${path}: cannot read: ${errorMessage(err)}`);
  }
}

function linkOr(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    if (errnoCode(err) === 'EINVAL') return path; // a file, not a link: counts as present
    throw new UserError(`${path}: cannot read: ${errorMessage(err)}`);
  }
}

function rootOf(o: InstallOptions): string {
  const root = resolve(o.root ?? '/');
  if (o.root !== undefined && !existsSync(root)) throw new UserError(`--root ${o.root}: no such directory`);
  return root;
}

function install(o: InstallOptions): InstallResult {
  const root = rootOf(o);
  const given = o.config ?? INSTALL_PATHS.defaultConfig;
  if (root !== '/' && !isAbsolute(given))
    throw new UserError(`--config ${given}: with --root, give the path as that machine sees it (absolute)`);
  const config = root === '/' ? resolve(given) : given;
  const configProblem = envValueProblem(config);
  if (configProblem) throw new UserError(`--config ${config}: ${configProblem}`);
  // Errors name the file, line and field; nothing is written before the configuration is valid.
  const spec = loadClusterConfig(under(root, config));
  if (!spec.nodes.some((n) => n.name === o.node))
    throw new UserError(
      `${under(root, config)}: no node "${o.node}" in nodes (${spec.nodes.map((n) => n.name).join(', ')}): give this node's name with --node`,
    );

  const shipped = readFileSync(SHIPPED_UNIT, 'utf8');
  const envText = envFileText(config, o.node);
  const unit = {
    path: INSTALL_PATHS.unit,
    action: fileAction(readOr(under(root, INSTALL_PATHS.unit)), shipped, !!o.force),
  };
  const env = {
    path: INSTALL_PATHS.env,
    action: fileAction(readOr(under(root, INSTALL_PATHS.env)), envText, !!o.force),
  };
  const conflicts: string[] = [];
  if (unit.action === 'conflict')
    conflicts.push(
      `${under(root, unit.path)} differs from the unit this cvserver ships (${SHIPPED_UNIT}): edited, or from another version; --force replaces it (local changes belong in a drop-in: systemctl edit ${UNIT_NAME})`,
    );
  if (env.action === 'conflict')
    conflicts.push(
      `${under(root, env.path)} differs from what would be written (CVSERVER_CONFIG=${config}, CVSERVER_NODE=${o.node}); --force replaces it`,
    );
  if (conflicts.length) throw new UserError(conflicts.join('\n'));

  const systemd = systemdState(root);
  const wants = linkOr(under(root, INSTALL_PATHS.wants));
  const plan = planInstall({
    systemd,
    unit: unit.action,
    env: env.action,
    enable: !!o.enable,
    now: !!o.now,
    wantsLink: wants,
  });
  const warnings: string[] = [];
  if (!existsSync(under(root, INSTALL_PATHS.command)))
    warnings.push(
      `${under(root, INSTALL_PATHS.command)} is missing: the unit runs it (scripts/setup links it)`,
    );
  if (plan.link && wants !== null)
    warnings.push(`${under(root, INSTALL_PATHS.wants)} pointed to ${wants}: replaced`);

  if (!o.dryRun) {
    if (unit.action !== 'unchanged') write(under(root, unit.path), shipped);
    if (env.action !== 'unchanged') write(under(root, env.path), envText);
    if (plan.link) {
      const link = under(root, INSTALL_PATHS.wants);
      mkdirSync(dirname(link), { recursive: true });
      rmSync(link, { force: true });
      symlinkSync(INSTALL_PATHS.unit, link);
    }
    for (const c of plan.commands) run(c);
  }
  return {
    dryRun: !!o.dryRun,
    root,
    systemd,
    config,
    node: o.node,
    unit,
    env,
    linked: plan.link ? INSTALL_PATHS.wants : null,
    commands: plan.commands,
    warnings,
    notes: plan.notes,
  };
}

export interface UninstallResult {
  dryRun: boolean;
  root: string;
  systemd: Systemd;
  removed: string[];
  commands: string[][];
  notes: string[];
}

function uninstall(o: InstallOptions): UninstallResult {
  const root = rootOf(o);
  const current = readOr(under(root, INSTALL_PATHS.unit));
  const unit = current === null ? null : fileAction(current, readFileSync(SHIPPED_UNIT, 'utf8'), !!o.force);
  if (unit === 'conflict')
    throw new UserError(
      `${under(root, INSTALL_PATHS.unit)} differs from the unit this cvserver ships (${SHIPPED_UNIT}): --force removes it anyway`,
    );
  const systemd = systemdState(root);
  const plan = planUninstall({
    systemd,
    unit,
    envPresent: readOr(under(root, INSTALL_PATHS.env)) !== null,
    wantsLink: linkOr(under(root, INSTALL_PATHS.wants)),
    now: !!o.now,
  });
  const removed = [
    ...(plan.removeLink ? [INSTALL_PATHS.wants] : []),
    ...(plan.removeUnit ? [INSTALL_PATHS.unit] : []),
    ...(plan.removeEnv ? [INSTALL_PATHS.env] : []),
  ];
  if (!o.dryRun) {
    for (const c of plan.before) run(c);
    for (const p of removed) rmSync(under(root, p), { force: true });
    for (const c of plan.after) run(c);
  }
  return {
    dryRun: !!o.dryRun,
    root,
    systemd,
    removed,
    commands: [...plan.before, ...plan.after],
    notes: removed.length || plan.before.length ? plan.notes : ['nothing installed: nothing to remove'],
  };
}

function write(path: string, text: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileAtomic(path, text, 0o644);
  } catch (err) {
    throw new UserError(`${path}: cannot write: ${errorMessage(err)}`);
  }
}

function run(command: string[]): void {
  const [cmd, ...args] = command as [string, ...string[]];
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
  if (r.error || r.status !== 0)
    throw new UserError(
      `${command.join(' ')} failed: ${r.error ? errorMessage(r.error) : r.stderr.trim() || `exit status ${r.status}`}`,
    );
}

const VERB: Record<FileAction, [string, string]> = {
  create: ['created', 'would create'],
  replace: ['replaced', 'would replace'],
  unchanged: ['unchanged', 'unchanged'],
  conflict: ['differs', 'differs'],
};

function formatInstall(r: InstallResult): string {
  const d = r.dryRun ? 1 : 0;
  const at = (p: string) => under(r.root, p);
  return [
    `${at(r.unit.path)}: ${VERB[r.unit.action][d]}`,
    `${at(r.env.path)}: ${VERB[r.env.action][d]} (CVSERVER_CONFIG=${r.config}, CVSERVER_NODE=${r.node})`,
    ...(r.linked
      ? [`${at(r.linked)}: ${r.dryRun ? 'would link' : 'linked'} to ${INSTALL_PATHS.unit} (enabled)`]
      : []),
    ...r.commands.map((c) => `${r.dryRun ? 'would run' : 'ran'}: ${c.join(' ')}`),
    ...r.warnings.map((w) => `warning: ${w}`),
    ...r.notes,
    ...(r.dryRun ? ['dry run: nothing written, nothing run'] : []),
  ].join('\n');
}

function formatUninstall(r: UninstallResult): string {
  return [
    ...r.removed.map((p) => `${under(r.root, p)}: ${r.dryRun ? 'would remove' : 'removed'}`),
    ...r.commands.map((c) => `${r.dryRun ? 'would run' : 'ran'}: ${c.join(' ')}`),
    ...r.notes,
    ...(r.dryRun ? ['dry run: nothing removed, nothing run'] : []),
  ].join('\n');
}
