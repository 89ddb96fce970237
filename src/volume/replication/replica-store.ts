/**
 * Where a replica keeps its replication state (generation ids, disk state, highest epoch). The
 * daemon backs it with meta.json (metadata.ts); tests use the in-memory one.
 */
import { readMetadata, updateMetadata } from '../metadata.ts';
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

/** meta.json of a volume directory. */
export class MetadataReplicaStore implements ReplicaStore {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }
  load(): ReplicaMeta {
    const m = readMetadata(this.dir);
    return { generation: m.generation, diskState: m.diskState, epoch: m.epoch, primaryOpen: m.primaryOpen };
  }
  save(meta: ReplicaMeta): void {
    updateMetadata(this.dir, (m) => ({
      ...m,
      generation: { ...meta.generation, history: meta.generation.history.slice(0, 8) },
      diskState: meta.diskState,
      epoch: meta.epoch,
      primaryOpen: meta.primaryOpen,
    }));
  }
}
