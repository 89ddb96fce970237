import type { Command } from 'commander';
import { clusterHooks, noHooks } from '../lab/hooks.ts';
import {
  type LabStatus,
  labCut,
  labDown,
  labExec,
  labHeal,
  labKill,
  labStart,
  labStatus,
  labUp,
} from '../lab/lab.ts';
import { DEFAULT_LAB_NAME, type Lab, mustLab } from '../lab/layout.ts';
import { UserError } from '../lib/errors.ts';
import { emit, table } from './output.ts';

interface Where {
  name: string;
  dir?: string;
}

function where(cmd: Command): Command {
  return cmd
    .option('--name <name>', 'the lab name', DEFAULT_LAB_NAME)
    .option('--dir <dir>', 'the lab directory (default /var/lib/cvserver-lab/<name>)');
}

const flag = (w: Where) => (w.name === DEFAULT_LAB_NAME ? '' : ` --name ${w.name}`);

function statusText(s: LabStatus): string {
  const rows = s.nodes.map((n) => [
    n.name,
    n.role,
    n.state,
    n.addresses.join(','),
    n.namespace,
    n.pidAlive ? String(n.pid) : n.pid ? `${n.pid} (dead)` : '-',
    String(n.processes),
    n.links.join(','),
  ]);
  return [
    `lab ${s.name} (${s.dir})`,
    table(['node', 'role', 'state', 'address', 'namespace', 'pid', 'procs', 'links'], rows),
    `host: ${s.host.map((h) => `${h.interface} ${h.address}${h.present ? '' : ' (missing)'}`).join(', ')}; hub namespace ${s.hub}`,
    `demo: ${s.demoUrl}`,
    ...(s.dashboard
      ? [
          `dashboard: ${s.dashboard.url} (certificate by the lab's CA ${s.dashboard.ca})`,
          `admin token: ${s.dashboard.token}`,
        ]
      : []),
  ].join('\n');
}

function tryText(lab: Lab, w: Where): string {
  const n = lab.nodes[0]?.name ?? 'n1';
  const c = `cvserver lab`;
  const f = flag(w);
  return [
    'try:',
    `  curl -d hello ${lab.demo.url}cgi-bin/records     # append a record (answers its number)`,
    `  curl ${lab.demo.url}cgi-bin/records              # how many records`,
    `  ${c} kill ${n}${f}      # power cut: every process of ${n} dies, its links go down`,
    `  ${c} cut ${n}${f}       # links down, processes alive;  ${c} heal${f}  brings every link up`,
    `  ${c} start ${n}${f}     # ${n} boots again`,
    `  ${c} exec ${n}${f} -- cvserver status`,
    `  ${c} status${f}`,
    `  ${c} down${f}           # removes everything`,
  ].join('\n');
}

function collectLinks(value: string, previous: number[]): number[] {
  const n = Number(value);
  if (!/^\d+$/.test(value)) throw new UserError(`--link: expected a link number (0, 1, ...), got "${value}"`);
  return [...previous, n];
}

export function registerLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .description('a cluster of nodes on this one machine, each in its own network namespace (root)');

  where(lab.command('up'))
    .description('build the lab (network, cluster.yaml, nodes) or complete a half-built one')
    .option('--nodes <n>', 'number of full nodes (default 3, or 2 with --witness)')
    .option('--witness', 'add a witness node "w" (with --nodes 2)')
    .option('--subnet <A.B.C>', 'the lab LAN (a /24): nodes .11.., demo .100, host .254', '10.77.0')
    .option(
      '--lease-ttl <s>',
      "the cluster's lease TTL in whole seconds (longer: slower failover, more time for an agent restart)",
      '2',
    )
    .option('--links <n>', 'links per node, each on a bridge of its own (2: the second on A.(B+1).C)', '1')
    .option(
      '--node-command <shell>',
      "run this shell command as each node's main process instead of the agent (testing)",
    )
    .option('--no-cluster', 'network and node processes only: skip init, apply and waiting for the demo')
    .option('--json', 'machine-readable output')
    .action(
      async (
        o: Where & {
          nodes?: string;
          witness?: boolean;
          subnet: string;
          links: string;
          leaseTtl: string;
          nodeCommand?: string;
          cluster: boolean;
          json?: boolean;
        },
      ) => {
        const nodes = o.nodes === undefined ? (o.witness ? 2 : 3) : Number(o.nodes);
        if (!Number.isInteger(nodes)) throw new UserError(`--nodes: "${o.nodes}" is not a number`);
        if (o.links !== '1' && o.links !== '2')
          throw new UserError(`--links: expected 1 or 2, got "${o.links}"`);
        const up = await labUp(
          {
            name: o.name,
            dir: o.dir,
            nodes,
            witness: !!o.witness,
            subnet: o.subnet,
            links: o.links === '2' ? 2 : 1,
            leaseTtl: Number(o.leaseTtl),
            nodeCommand: o.nodeCommand ? ['/bin/sh', '-c', o.nodeCommand] : undefined,
          },
          o.cluster ? clusterHooks : noHooks,
        );
        const s = labStatus(up);
        emit(!!o.json, s, () => `${statusText(s)}\n${tryText(up, o)}`);
      },
    );

  where(lab.command('status'))
    .description('nodes (up, cut, down, stopped), their pids, addresses and namespaces, the demo URL')
    .option('--json', 'machine-readable output')
    .action((o: Where & { json?: boolean }) => {
      const s = labStatus(mustLab(o.name, o.dir));
      emit(!!o.json, s, () => statusText(s));
    });

  where(lab.command('kill <node>'))
    .description('power cut: every process of the node dies at once (SIGKILL), then its links go down')
    .option('--json', 'machine-readable output')
    .action(async (node: string, o: Where & { json?: boolean }) => {
      const r = await labKill(mustLab(o.name, o.dir), node);
      emit(!!o.json, r, () => `node ${node}: killed ${r.killed.length} processes, links down`);
    });

  where(lab.command('cut <node>'))
    .description("take the node's links down (its processes keep running)")
    .option('--link <i>', 'only this link (0, 1, ...; repeat for several)', collectLinks, [])
    .action((node: string, o: Where & { link: number[] }) => {
      labCut(mustLab(o.name, o.dir), node, o.link.length ? o.link : undefined);
      process.stdout.write(
        `node ${node}: ${o.link.length ? `link${o.link.length > 1 ? 's' : ''} ${o.link.join(', ')}` : 'links'} down\n`,
      );
    });

  where(lab.command('heal'))
    .description('bring every link of every node up')
    .action((o: Where) => {
      labHeal(mustLab(o.name, o.dir));
      process.stdout.write('every link up\n');
    });

  where(lab.command('start <node>'))
    .description(
      'boot the node again: leftovers killed, stale mounts and loop devices cleared, links up, main process started',
    )
    .option(
      '--agent-only',
      'start only its main process, killing and clearing nothing (as a service manager restarts a dead agent)',
    )
    .option(
      '--join',
      'as a new machine joining the running cluster (after cvserver node add): its state dir emptied, its agent started with --initial-cluster-state existing',
    )
    .option('--json', 'machine-readable output')
    .action(async (node: string, o: Where & { json?: boolean; agentOnly?: boolean; join?: boolean }) => {
      if (o.join && o.agentOnly) throw new UserError('lab start: --join or --agent-only, not both');
      const r = await labStart(mustLab(o.name, o.dir), node, { agentOnly: !!o.agentOnly, join: !!o.join });
      emit(!!o.json, r, () =>
        r.alreadyRunning
          ? `node ${node}: already running (pid ${r.pid}); links up`
          : o.agentOnly
            ? `node ${node}: main process started (pid ${r.pid}); nothing else touched`
            : `node ${node}: started (pid ${r.pid}); cleared ${r.killed?.length ?? 0} leftover processes, ${r.cleanup?.unmounted.length ?? 0} mounts, ${r.cleanup?.detached.length ?? 0} loop devices`,
      );
    });

  where(lab.command('exec <node> <command...>'))
    .description(
      "run a command in the node's namespace with its state dir (e.g. lab exec n1 -- cvserver status); its exit code is passed through",
    )
    .action((node: string, command: string[], o: Where) => {
      process.exitCode = labExec(mustLab(o.name, o.dir), node, command);
    });

  where(lab.command('down'))
    .description(
      'remove everything the lab made (processes, mounts, loop devices, namespaces, host veth, dir); safe to run twice',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: Where & { json?: boolean }) => {
      const r = await labDown(o.name, o.dir);
      const killed = Object.values(r.killed).flat().length;
      emit(!!o.json, r, () =>
        r.namespaces.length === 0 && !r.dirRemoved && killed === 0
          ? `lab ${o.name}: nothing to remove`
          : `lab ${o.name} removed: ${killed} processes killed, ${r.unmounted.length} mounts, ${r.detached.length} loop devices, ${r.namespaces.length} namespaces${r.dirRemoved ? `, ${r.dir}` : ''}`,
      );
    });
}
