/**
 * A replica's peers follow the cluster's membership while its daemon runs: a node added or removed
 * changes the planned peer set, which is written to replication.yaml and handed to the running daemon
 * (its `adjust` adds and drops peers live). And the replicas of a node that leaves the cluster are
 * taken down (their data stays on disk).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { VserverSpec } from '../../cluster/config.ts';
import type { Logger } from '../../lib/log.ts';
import { volumeDir, volumesDir } from '../../lib/paths.ts';
import { volumeAdjust, volumeDown, volumeStatus } from '../../volume/lifecycle.ts';
import {
  type ReplicationConfigFile,
  readReplicationConfig,
  writeReplicationConfig,
} from '../../volume/replication-config.ts';
import type { ReplicaContext } from '../resources.ts';
import { replicaPlan, replicationDiffers } from './replica-plan.ts';
import { inStateDir } from './state-dir-scope.ts';

/**
 * replication.yaml takes what the plan decides (identity, addresses, secret, peers, quorum) when it
 * differs; the rest (set by `volume adjust`) stays the operator's. True when written.
 */
export function writePlannedReplication(
  dir: string,
  onDisk: ReplicationConfigFile,
  planned: ReplicationConfigFile,
): boolean {
  if (!replicationDiffers(onDisk, planned)) return false;
  const p = planned;
  writeReplicationConfig(dir, {
    ...onDisk,
    node: p.node,
    listen: p.listen,
    secretFile: p.secretFile,
    peers: p.peers,
    quorum: p.quorum,
  });
  return true;
}

/**
 * Writes the planned peers into the volume's replication.yaml when they differ, and has a running
 * daemon re-read it. Returns what the daemon applies now and what waits for its restart (undefined
 * when the volume does not exist here yet or its daemon is not up).
 */
export function followPeers(
  stateDir: string,
  spec: VserverSpec,
  ctx: ReplicaContext,
  log: Logger,
): Promise<{ apply: unknown[]; atRestart: string[] } | undefined> {
  return inStateDir(stateDir, async () => {
    const dir = volumeDir(spec.name);
    if (!existsSync(join(dir, 'meta.json'))) return undefined;
    const onDisk = readReplicationConfig(dir);
    if (!onDisk) return undefined;
    const p = replicaPlan(spec, ctx.cluster, ctx.node, ctx.secretFile).replication;
    if (writePlannedReplication(dir, onDisk, p))
      log.info(
        { vserver: spec.name, event: 'replication-peers', peers: p.peers.map((x) => x.node) },
        'replication.yaml follows the cluster (peers)',
      );
    const r = await volumeAdjust(spec.name, {});
    if (!r.running) return undefined;
    if (r.atRestart.length)
      log.warn(
        { vserver: spec.name, event: 'replication-at-restart', atRestart: r.atRestart },
        'the running volume daemon applies these settings only when it restarts',
      );
    return { apply: r.apply, atRestart: r.atRestart };
  });
}

/** Every volume of this node taken down (a node removed from the cluster): names of those that ran. */
export function releaseAllReplicas(stateDir: string, log: Logger): Promise<string[]> {
  return inStateDir(stateDir, async () => {
    const root = volumesDir();
    const names = existsSync(root) ? readdirSync(root) : [];
    const down: string[] = [];
    for (const name of names) {
      if (!existsSync(join(root, name, 'meta.json'))) continue;
      const s = await volumeStatus(name).catch(() => undefined);
      if (!s || (s.pid === null && s.loop === null && s.mounts.length === 0)) continue;
      await volumeDown(name, () => {}, { force: true });
      log.info({ vserver: name, event: 'volume-down' }, 'volume down: this node left the cluster');
      down.push(name);
    }
    return down;
  });
}
