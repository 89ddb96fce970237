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
  /** The generation of the newest primary this replica heard from (PeerState.witnessed). */
  witnessed?: Generation;
  /** The generation in which it last acknowledged anything as primary (PeerState.lastAcked). */
  lastAcked?: string;
}

export interface ReplicaStore {
  load(): ReplicaMeta;
  /** Durable before it returns; then tells the listeners (see onSave). */
  save(meta: ReplicaMeta): void;
  /**
   * Calls `listener` after every save, once it is durable: the replica server tells connected
   * primaries of a changed disk state whoever changed it (itself, or the device demoting).
   * Returns the function that removes the listener.
   */
  onSave(listener: () => void): () => void;
}

/** The listeners of one store (both stores call them after a save). */
class SaveListeners {
  #listeners = new Set<() => void>();
  add(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  notify(): void {
    for (const l of [...this.#listeners]) l();
  }
}

export class MemoryReplicaStore implements ReplicaStore {
  #meta: ReplicaMeta;
  saves = 0;
  #listeners = new SaveListeners();
  constructor(meta: ReplicaMeta) {
    this.#meta = structuredClone(meta);
  }
  load(): ReplicaMeta {
    return structuredClone(this.#meta);
  }
  save(meta: ReplicaMeta): void {
    this.saves++;
    this.#meta = structuredClone(meta);
    this.#listeners.notify();
  }
  onSave(listener: () => void): () => void {
    return this.#listeners.add(listener);
  }
}

/**
 * A copy the caller may change. By hand, not structuredClone: `load` runs several times per
 * replicated request on both sides, and the serializer behind structuredClone took about half of
 * its time (3-4 % of the primary daemon's CPU under fio, by perf).
 */
export function copyMeta(m: ReplicaMeta): ReplicaMeta {
  return {
    generation: copyGeneration(m.generation),
    diskState: m.diskState,
    epoch: m.epoch,
    primaryOpen: m.primaryOpen,
    ...(m.witnessed ? { witnessed: copyGeneration(m.witnessed) } : {}),
    ...(m.lastAcked ? { lastAcked: m.lastAcked } : {}),
  };
}

function copyGeneration(g: Generation): Generation {
  return { current: g.current, bitmap: g.bitmap, history: [...g.history] };
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
  #listeners = new SaveListeners();
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
    // The optional fields are this store's too: absent from `meta` means removed from the file.
    const m = updateMetadata(this.dir, ({ witnessed: _w, lastAcked: _a, ...old }) => ({
      ...old,
      generation: { ...meta.generation, history: meta.generation.history.slice(0, 8) },
      diskState: meta.diskState,
      epoch: meta.epoch,
      primaryOpen: meta.primaryOpen,
      ...(meta.witnessed
        ? { witnessed: { ...meta.witnessed, history: meta.witnessed.history.slice(0, 8) } }
        : {}),
      ...(meta.lastAcked ? { lastAcked: meta.lastAcked } : {}),
    }));
    this.#meta = replicaFields(m);
    this.#listeners.notify();
  }
  onSave(listener: () => void): () => void {
    return this.#listeners.add(listener);
  }
}

function replicaFields(m: VolumeMetadata): ReplicaMeta {
  return {
    generation: m.generation,
    diskState: m.diskState,
    epoch: m.epoch,
    primaryOpen: m.primaryOpen,
    ...(m.witnessed ? { witnessed: m.witnessed } : {}),
    ...(m.lastAcked ? { lastAcked: m.lastAcked } : {}),
  };
}
