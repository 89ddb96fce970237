/**
 * One simulated machine: what survives a power loss (its disk, its engine files, its metadata) and
 * the processes of one power-on (a ReplicaServer, and for a data node a ReplicatedDevice), wired
 * as the volume daemon wires them, on the simulation's clock, network and PRNG.
 */
import type { Clock, ManualClock, TimerHandle } from '../../../src/lib/clock.ts';
import type { BlockDevice } from '../../../src/volume/block-device.ts';
import type { ConnectionLog } from '../../../src/volume/replication/connection.ts';
import type { AfterSplitBrainPolicy } from '../../../src/volume/replication/generation.ts';
import { ReplicaServer } from '../../../src/volume/replication/replica-server.ts';
import {
  copyMeta,
  type ReplicaMeta,
  type ReplicaStore,
} from '../../../src/volume/replication/replica-store.ts';
import { ReplicatedDevice } from '../../../src/volume/replication/replicated-device.ts';
import type { QuorumPolicy } from '../../../src/volume/replication/role.ts';
import { MemoryDisk } from './memory-disk.ts';
import type { MemoryNetwork } from './memory-network.ts';
import { MemoryStateFiles } from './memory-state-files.ts';

export const PORT = 7000;

/** The clock of one power-on: its timers die with it. */
class ProcessClock implements Clock {
  readonly base: ManualClock;
  alive = true;
  constructor(base: ManualClock) {
    this.base = base;
  }
  now(): number {
    return this.base.now();
  }
  setTimer(fn: () => void, ms: number): TimerHandle {
    return this.base.setTimer(() => {
      if (this.alive) fn();
    }, ms);
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(resolve, ms));
  }
}

/** meta.json of one power-on: saves are durable at once (as MetadataReplicaStore's fsync'd rename). */
class ProcessStore implements ReplicaStore {
  readonly node: SimNode;
  readonly clock: ProcessClock;
  #listeners = new Set<() => void>();
  constructor(node: SimNode, clock: ProcessClock) {
    this.node = node;
    this.clock = clock;
  }
  load(): ReplicaMeta {
    return copyMeta(this.node.meta);
  }
  save(meta: ReplicaMeta): void {
    if (!this.clock.alive) throw new Error('metadata save by a crashed process');
    this.node.meta = copyMeta(meta);
    for (const l of [...this.#listeners]) l();
  }
  onSave(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

export interface ClusterShape {
  volumeUuid: string;
  secret: Buffer;
  size: number;
  quorum: QuorumPolicy;
  afterSplitBrain: AfterSplitBrainPolicy;
  durableWrites: boolean;
  nodes: Array<{ name: string; tiebreaker: boolean }>;
}

export interface Process {
  clock: ProcessClock;
  device: ReplicatedDevice | undefined;
  server: ReplicaServer;
  local: BlockDevice | undefined;
}

export class SimNode {
  readonly name: string;
  readonly tiebreaker: boolean;
  readonly disk: MemoryDisk | undefined;
  readonly files: MemoryStateFiles;
  meta: ReplicaMeta;
  proc: Process | undefined;
  /** Power-ons so far. */
  boots = 0;

  constructor(
    name: string,
    tiebreaker: boolean,
    shape: ClusterShape,
    clock: ManualClock,
    random: () => number,
  ) {
    this.name = name;
    this.tiebreaker = tiebreaker;
    this.disk = tiebreaker ? undefined : new MemoryDisk(shape.size, clock, random);
    this.files = new MemoryStateFiles(clock, random);
    this.meta = {
      generation: { current: tiebreaker ? '0' : 'a11', bitmap: '0', history: [] },
      diskState: tiebreaker ? 'Diskless' : 'UpToDate',
      epoch: 0,
      primaryOpen: false,
    };
  }

  get up(): boolean {
    return this.proc !== undefined;
  }

  async start(
    shape: ClusterShape,
    base: ManualClock,
    net: MemoryNetwork,
    randomBytes: (n: number) => Buffer,
    log: (node: string) => ConnectionLog,
  ): Promise<void> {
    this.boots++;
    const clock = new ProcessClock(base);
    const transport = net.transport(this.name);
    const store = new ProcessStore(this, clock);
    const local = this.disk?.open();
    const device = local
      ? new ReplicatedDevice(
          local,
          store,
          {
            node: this.name,
            volumeUuid: shape.volumeUuid,
            secret: shape.secret,
            peers: shape.nodes
              .filter((n) => n.name !== this.name)
              .map((n) => ({ node: n.name, host: n.name, port: PORT, tiebreaker: n.tiebreaker })),
            quorum: shape.quorum,
            afterSplitBrain: shape.afterSplitBrain,
            stateDir: `/nonexistent/${this.name}`,
            extentSize: 8192,
            alExtentSize: 16384,
            alSlots: 4,
            clock,
            transport,
            files: this.files.open(),
            random: randomBytes,
          },
          log(this.name),
        )
      : undefined;
    const server = new ReplicaServer({
      node: this.name,
      volumeUuid: shape.volumeUuid,
      secret: shape.secret,
      host: this.name,
      port: PORT,
      ...(local ? { device: local } : {}),
      size: shape.size,
      store,
      durableWrites: shape.durableWrites,
      isPrimary: () => device?.role === 'Primary',
      ...(device ? { divergence: device } : {}),
      log: log(this.name),
      clock,
      transport,
    });
    this.proc = { clock, device, server, local };
    await server.listen();
  }

  /** Power loss: the processes stop dead; the disk and the files keep a seeded part of what was not synced. */
  crash(net: MemoryNetwork): number {
    if (!this.proc) return 0;
    this.proc.clock.alive = false;
    this.proc = undefined;
    net.silence(this.name);
    this.files.crash();
    return this.disk?.crash().lostSectors ?? 0;
  }
}
