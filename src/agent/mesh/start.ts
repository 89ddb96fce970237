/**
 * The mesh as the agent starts it: this node's addresses and every other node's from cluster.yaml
 * (witness included), the key from the cluster's secret file, and its events turned into lines of the
 * cluster's log. Without a readable secret it does not run, and says why in `status` and `links`.
 */
import { type ClusterSpec, membershipOf } from '../../cluster/config.ts';
import type { Clock } from '../../lib/clock.ts';
import { errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { readSecret } from '../../volume/replication-config.ts';
import { describeMeshEvent } from './mesh.ts';
import { MeshService } from './service.ts';
import type { MeshReport } from './view.ts';

export interface MeshHandle {
  report(): MeshReport;
  close(): void;
}

export interface StartMeshOptions {
  spec: ClusterSpec;
  node: string;
  stateDir: string;
  log: Logger;
  /** A line for the cluster's log. */
  record(text: string): void;
  /** Is the peer's lease valid in the store as last read (undefined: not read yet)? */
  leaseAlive(peer: string): boolean | undefined;
  /** A peer that was reachable is silent on every link (maybe a power cut: a failover may follow). */
  peerLost?(peer: string): void;
  /** Monotonic (see MeshServiceOptions.clock). */
  clock?: Clock;
  /** The wall clock: heartbeats on its grid (see MeshServiceOptions.gridClock). */
  gridClock?: Clock;
}

export function startMesh(o: StartMeshOptions): MeshHandle {
  const m = membershipOf(o.spec);
  const me = o.spec.nodes.find((n) => n.name === o.node);
  const setup = {
    me: o.node,
    myAddresses: me?.addresses ?? [],
    peers: o.spec.nodes
      .filter((n) => n.name !== o.node)
      .map((n) => ({ name: n.name, addresses: n.addresses })),
  };
  const timing = { intervalMs: m.intervalMs, deadAfterMs: m.deadAfterMs };
  let secret: Buffer;
  try {
    secret = readSecret(o.spec.secret_file);
  } catch (err) {
    const problem = `membership mesh not running: ${errorMessage(err)}`;
    o.log.error({ event: 'mesh' }, problem);
    o.record(problem);
    return {
      report: () => ({
        node: o.node,
        port: m.port,
        intervalMs: m.intervalMs,
        deadAfterMs: m.deadAfterMs,
        problems: [problem],
        peers: [],
        links: [],
        matrix: [],
        sent: 0,
        sendErrors: 0,
        dropped: {} as MeshReport['dropped'],
        lastDrop: null,
      }),
      close: () => {},
    };
  }
  const service = new MeshService({
    cluster: o.spec.cluster,
    secret,
    setup,
    port: m.port,
    timing,
    stateDir: o.stateDir,
    log: o.log,
    clock: o.clock,
    gridClock: o.gridClock,
    onEvent: (e) => {
      if (e.kind === 'node' && !e.reachable) o.peerLost?.(e.peer);
      o.record(describeMeshEvent(e, e.kind === 'node' ? o.leaseAlive(e.peer) : undefined));
    },
  });
  service.start();
  return service;
}
