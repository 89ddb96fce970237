/**
 * Where a replica keeps its replication state (generation ids, disk state, highest epoch). The
 * daemon backs it with meta.json (metadata.ts); tests use the in-memory one.
 */
import { readMetadata, updateMetadata, type VolumeMetadata } from '../metadata.ts';
import type { DiskState, Generation } from './generation.ts';

export interface ReplicaMeta {
  generation: Generation;
  diskState: DiskState;
  epoch: number;
  /** It was primary when it last stopped uncleanly (meta.json primaryOpen). */
  primaryOpen: boolean;
}

export interface ReplicaStore {
  load(): ReplicaMeta;
  /** Durable before it returns. */
  save(meta: ReplicaMeta): void;
}

export class MemoryReplicaStore implements ReplicaStore {
  #meta: ReplicaMeta;
  saves = 0;
  constructor(meta: ReplicaMeta) {
    this.#meta = structuredClone(meta);
  }
  load(): ReplicaMeta {
    return structuredClone(this.#meta);
  }
  save(meta: ReplicaMeta): void {
    this.saves++;
    this.#meta = structuredClone(meta);
  }
}

/**
 * A copy the caller may change. By hand, not structuredClone: `load` runs several times per
 * replicated request on both sides, and the serializer behind structuredClone took about half of
 * its time (3-4 % of the primary daemon's CPU under fio, by perf).
 */
function copyMeta(m: ReplicaMeta): ReplicaMeta {
  const g = m.generation;
  return {
    generation: { current: g.current, bitmap: g.bitmap, history: [...g.history] },
    diskState: m.diskState,
    epoch: m.epoch,
    primaryOpen: m.primaryOpen,
  };
}

/**
 * meta.json of a volume directory. `load` runs several times per replicated request, so the store
 * keeps what it read or last saved and touches the file only to save: while the daemon runs it is
 * meta.json's only writer (the CLI writes it only when the volume is down), so a stat per load
 * (about 2 % of the primary's CPU under fio) would only ever confirm the copy it holds.
 */
export class MetadataReplicaStore implements ReplicaStore {
  readonly dir: string;
  #meta: ReplicaMeta | undefined;
  constructor(dir: string) {
    this.dir = dir;
  }
  load(): ReplicaMeta {
    if (!this.#meta) {
      this.#meta = replicaFields(readMetadata(this.dir));
    }
    return copyMeta(this.#meta);
  }
  save(meta: ReplicaMeta): void {
    const m = updateMetadata(this.dir, (old) => ({
      ...old,
      generation: { ...meta.generation, history: meta.generation.history.slice(0, 8) },
      diskState: meta.diskState,
      epoch: meta.epoch,
      primaryOpen: meta.primaryOpen,
    }));
    this.#meta = replicaFields(m);
  }
}

function replicaFields(m: VolumeMetadata): ReplicaMeta {
  return { generation: m.generation, diskState: m.diskState, epoch: m.epoch, primaryOpen: m.primaryOpen };
}
