import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { UserError } from '../lib/errors.ts';
import { tryRun } from '../lib/exec.ts';
import type { VserverDefinition } from './definition.ts';

type Network = NonNullable<VserverDefinition['network']>;

/** Runs `ip` commands (one per line) in one process; fails with the first failing command's message. */
function ipBatch(cmd: string[], lines: string[]): void {
  const [bin, ...args] = cmd;
  const r = spawnSync(bin!, [...args, '-batch', '-'], {
    input: `${lines.join('\n')}\n`,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  if (r.status !== 0)
    throw new Error(
      `${cmd.join(' ')} -batch: ${(r.stderr ?? '').trim() || r.error?.message} (commands: ${lines.join('; ')})`,
    );
}

/** The host end of the veth pair: short (IFNAMSIZ 15) and unique per state dir and vserver. */
export function hostInterfaceName(stateDir: string, name: string): string {
  return `vs${createHash('sha256').update(`${stateDir}\0${name}`).digest('hex').slice(0, 10)}`;
}

/** The host end's MAC address: locally administered, unicast, above any vendor's (fe:...), stable per name. */
export function hostInterfaceMac(hostIf: string): string {
  const bytes = createHash('sha256').update(hostIf).digest().subarray(0, 5);
  return ['fe', ...[...bytes].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

function ipArgs(net: Network): string[] {
  return net.netns ? ['-n', net.netns] : [];
}

/** Fails with a clear message when the bridge is missing, before anything is created. */
export function checkBridge(net: Network): void {
  const r = spawnSync('ip', [...ipArgs(net), 'link', 'show', 'dev', net.bridge], { stdio: 'ignore' });
  if (r.status !== 0) {
    throw new UserError(
      `network.bridge: bridge "${net.bridge}" does not exist${net.netns ? ` in network namespace ${net.netns}` : ''} (create it first: ip link add ${net.bridge} type bridge)`,
    );
  }
}

/**
 * Attaches the container's network namespace (of process `pid`) to the bridge by a veth pair,
 * gives eth0 its addresses and the default route, then announces each address by gratuitous ARP
 * so that neighbours learn the (possibly new) location at once after a failover.
 */
export function attachNetwork(net: Network, hostIf: string, pid: number): void {
  const peer = `${hostIf}c`;
  const ns = ['-t', String(pid), '-n'];
  // Two `ip -batch` runs (host side, container side) instead of a process per command: each spawn
  // costs tens of milliseconds on a busy host, and this is on the failover path.
  const host = [
    // The host end gets a high MAC address (fe:...): a Linux bridge whose address was not set takes
    // the lowest of its ports', so a lower one joining or leaving would change the MAC of the host's
    // own address on that bridge, and its neighbours' ARP caches would point nowhere for seconds.
    `link add ${hostIf} address ${hostInterfaceMac(hostIf)} type veth peer name ${peer}`,
    `link set ${peer} netns ${pid}`,
    `link set ${hostIf} master ${net.bridge} up`,
  ];
  try {
    ipBatch(['ip', ...ipArgs(net)], host);
  } catch {
    // Rare, so looked at only now: no bridge (a clear error), or a host end left by a stop that did
    // not finish (removed, then once more).
    checkBridge(net);
    spawnSync('ip', [...ipArgs(net), 'link', 'del', hostIf], { stdio: 'ignore' });
    ipBatch(['ip', ...ipArgs(net)], host);
  }
  ipBatch(
    ['nsenter', ...ns, 'ip'],
    [
      `link set ${peer} name eth0`,
      ...net.addresses.map((a) => `addr add ${a} dev eth0`),
      'link set lo up',
      'link set eth0 up',
      ...(net.gateway ? [`route add default via ${net.gateway}`] : []),
    ],
  );
  for (const a of net.addresses) {
    // Not awaited: arping takes about a second and the start should not wait for it.
    const ip = a.split('/')[0] ?? '';
    const child = spawn('nsenter', [...ns, 'arping', '-q', '-U', '-c', '1', '-I', 'eth0', ip], {
      stdio: 'ignore',
      detached: true,
    });
    child.on('error', () => {});
    child.unref();
  }
}

/** Asynchronous: it is on the stop path, which runs on the agent's main thread (see crun.ts). */
export async function detachNetwork(net: Network, hostIf: string): Promise<void> {
  await tryRun('ip', [...ipArgs(net), 'link', 'del', hostIf]);
}
