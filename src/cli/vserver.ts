import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { loadYamlFile } from '../lib/config.ts';
import { UserError } from '../lib/errors.ts';
import { crunExecArgs } from '../vserver/crun.ts';
import { vserverDefinitionSchema } from '../vserver/definition.ts';
import {
  createVserver,
  destroyVserver,
  listVservers,
  mustDefinition,
  type RootfsSource,
  startVserver,
  stopVserver,
  type VserverStatus,
  vserverStatus,
} from '../vserver/manager.ts';
import { rollbackVserver, snapshotVserver } from '../vserver/snapshot.ts';
import { crunRoot, readEvents, vserverPaths } from '../vserver/store.ts';
import { superviseMain } from '../vserver/supervisor.ts';
import { askAgent, operatorName } from './agent-client.ts';
import { emit, table } from './output.ts';

function describe(s: VserverStatus): string {
  const health = Object.entries(s.health)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  return [
    `vserver ${s.name}: ${s.state}${s.pid ? ` (pid ${s.pid})` : ''}, desired ${s.desired}`,
    `  addresses ${s.addresses.join(', ') || '-'}`,
    `  health ${health || '-'}; restarts ${s.restarts}; oom kills ${s.oomKills}`,
  ].join('\n');
}

async function mustRunning(name: string): Promise<void> {
  const s = await vserverStatus(name);
  if (s.state !== 'running') throw new UserError(`vserver ${name} is not running (${s.state})`);
}

export function registerVserverCommands(program: Command): void {
  const vs = program
    .command('vserver')
    .description('system containers (crun) with their own IP, limits and health checks');

  vs.command('create <file>')
    .description('create a vserver from a YAML definition (validated first; nothing is created on error)')
    .option('--template <name>', 'create the root filesystem from a template: busybox or debian')
    .option('--import <tarball>', 'create the root filesystem from a tarball')
    .option('--json', 'machine-readable output')
    .action((file: string, o: { template?: string; import?: string; json?: boolean }) => {
      const def = loadYamlFile(file, vserverDefinitionSchema);
      if (o.template && o.import) throw new UserError('--template and --import exclude each other');
      if (o.template && o.template !== 'busybox' && o.template !== 'debian') {
        throw new UserError(`--template: unknown template "${o.template}" (expected busybox or debian)`);
      }
      const source: RootfsSource = o.template
        ? { template: o.template as 'busybox' | 'debian' }
        : o.import
          ? { importTarball: o.import }
          : undefined;
      createVserver(def, source);
      emit(
        !!o.json,
        { name: def.name, rootfs: def.rootfs },
        () => `created vserver ${def.name} (rootfs ${def.rootfs})`,
      );
    });

  vs.command('start <name>')
    .description('start the vserver and its supervisor; it keeps running after this command exits')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      await startVserver(name);
      const s = await vserverStatus(name);
      emit(!!o.json, s, () => describe(s));
    });

  vs.command('stop <name>')
    .description('send the stop signal, wait up to the stop timeout, then kill')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const how = await stopVserver(name);
      emit(!!o.json, { name, result: how }, () => `vserver ${name}: ${how}`);
    });

  vs.command('restart <name>')
    .description('stop then start')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      await stopVserver(name, 'restart requested');
      await startVserver(name);
      const s = await vserverStatus(name);
      emit(!!o.json, s, () => describe(s));
    });

  vs.command('snapshot <name> <snapshot>')
    .description("take a snapshot of the vserver's volume while it runs (on the node where it runs)")
    .option('--json', 'machine-readable output')
    .action(async (name: string, snapshot: string, o: { json?: boolean }) => {
      const r = await snapshotVserver(name, snapshot);
      emit(
        !!o.json,
        r,
        () =>
          `snapshot ${snapshot} of vserver ${name} (volume ${r.volume}) taken${r.frozen.length ? `, filesystem frozen ${r.frozenMs} ms` : ''}`,
      );
    });

  vs.command('rollback <name> <snapshot>')
    .description('stop the vserver, write the snapshot back through its (replicated) volume, start it again')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snapshot: string, o: { json?: boolean }) => {
      const say = (m: string) => {
        if (!o.json) process.stderr.write(`  ${m}\n`);
      };
      const r = await rollbackVserver(name, snapshot, say);
      emit(
        !!o.json,
        r,
        () =>
          `vserver ${name} rolled back to ${snapshot} (${r.bytes} bytes written back to volume ${r.volume})${r.restarted ? ', started again' : ''}`,
      );
    });

  vs.command('status <name>')
    .description('state (recovered from crun), health, restarts')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const s = await vserverStatus(name);
      emit(!!o.json, s, () => describe(s));
    });

  vs.command('list')
    .description('all vservers on this node')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const all = await listVservers();
      emit(!!o.json, all, () =>
        table(
          ['NAME', 'STATE', 'PID', 'ADDRESSES', 'HEALTH', 'RESTARTS'],
          all.map((s) => [
            s.name,
            s.state,
            String(s.pid ?? '-'),
            s.addresses.join(',') || '-',
            Object.values(s.health).join(',') || '-',
            String(s.restarts),
          ]),
        ),
      );
    });

  vs.command('exec <name> <command...>')
    .allowUnknownOption()
    .helpOption(false)
    .description(
      'run a command inside the vserver; exits with its exit code (put -- before a command with options)',
    )
    .action(async (name: string, command: string[]) => {
      mustDefinition(name);
      await mustRunning(name);
      const r = spawnSync('crun', crunExecArgs(crunRoot(), name, command, false), { stdio: 'inherit' });
      process.exitCode = r.status ?? 1;
    });

  vs.command('enter <name>')
    .description('an interactive shell inside the vserver')
    .option('--shell <path>', 'the shell to run', '/bin/sh')
    .action(async (name: string, o: { shell: string }) => {
      mustDefinition(name);
      await mustRunning(name);
      const r = spawnSync('crun', crunExecArgs(crunRoot(), name, [o.shell], process.stdin.isTTY === true), {
        stdio: 'inherit',
      });
      process.exitCode = r.status ?? 1;
    });

  vs.command('logs <name>')
    .description('console output (kept in a file with rotation) or, with --events, the event log')
    .option('--events', 'show the events (state changes with reasons) instead')
    .option('--json', 'machine-readable output (events)')
    .action((name: string, o: { events?: boolean; json?: boolean }) => {
      mustDefinition(name);
      if (o.events || o.json) {
        const evs = readEvents(name);
        emit(!!o.json, evs, () => evs.map((e) => `${e.time} ${e.type}: ${e.reason}`).join('\n'));
        return;
      }
      const p = vserverPaths(name).console;
      for (const f of [`${p}.1`, p]) if (existsSync(f)) process.stdout.write(readFileSync(f));
    });

  vs.command('destroy <name>')
    .description('stop the vserver and remove its state (and, with --rootfs, its root filesystem)')
    .option('--rootfs', 'also delete the root filesystem directory')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { rootfs?: boolean; json?: boolean }) => {
      await destroyVserver(name, !!o.rootfs);
      emit(!!o.json, { name, destroyed: true }, () => `destroyed vserver ${name}`);
    });

  vs.command('clear <name>')
    .description(
      "forget a vserver's failures in the cluster (the manager places it again); through this node's agent",
    )
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await askAgent({ op: 'clear', vserver: name, by: operatorName() });
      emit(
        !!o.json,
        r,
        () => `failures of ${name} cleared: the manager places it again (see cvserver status)`,
      );
    });

  vs.command('supervise <name>', { hidden: true })
    .description('(internal) the per-vserver supervisor that start launches')
    .action(async (name: string) => {
      await superviseMain(name);
    });
}
