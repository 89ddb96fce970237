/**
 * NodeResources carried out on a worker thread (resources-worker.ts), so the agent's loop — lease
 * renewals, the fence timer, the manager — never waits behind a synchronous mkfs or crun call. A worker
 * that dies fails the calls in flight and is started again on the next call. With `idleMs`, an idle
 * worker is ended (it holds ~40 MiB: its own V8 heap and copies of the modules) and started again when
 * needed, which costs ~0.2 s with the compile cache warm (bin/cvserver): `warm()` starts it ahead of a
 * call when the cluster changes, so a failover or migrate mostly does not wait for it.
 */
import { Worker } from 'node:worker_threads';
import type { VserverSpec } from '../cluster/config.ts';
import type { NodeResources, ReplicaContext, ResourceObservation } from './resources.ts';
import type { ResourceCall, ResourceReply } from './resources-worker.ts';

const WORKER = new URL('./resources-worker.ts', import.meta.url);

export class ThreadedResources implements NodeResources {
  readonly #data: { stateDir: string; node: string };
  #worker: Worker | undefined;
  #next = 1;
  #idle: NodeJS.Timeout | undefined;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  readonly #idleMs: number;

  constructor(stateDir: string, node: string, idleMs = Number.POSITIVE_INFINITY) {
    this.#data = { stateDir, node };
    this.#idleMs = idleMs;
  }

  #call(method: ResourceCall['method'], args: unknown[]): Promise<unknown> {
    clearTimeout(this.#idle);
    const w = this.#ensureWorker();
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.postMessage({ id, method, args } satisfies ResourceCall);
    });
  }

  /** Loads the worker now if it is not (a start is likely soon); it ends again after `idleMs` unused. */
  warm(): void {
    if (this.#worker) return;
    this.#ensureWorker();
    this.#armIdle();
  }

  #armIdle(): void {
    clearTimeout(this.#idle);
    if (this.#pending.size > 0 || !this.#worker || !Number.isFinite(this.#idleMs)) return;
    const w = this.#worker;
    this.#idle = setTimeout(() => {
      if (this.#worker === w && this.#pending.size === 0) {
        this.#worker = undefined;
        void w.terminate();
      }
    }, this.#idleMs);
    this.#idle.unref();
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    // A small young generation: the worker allocates little, and V8's default (16 MiB semi-spaces,
    // grown on first use) was a third of its ~58 MiB; with 4 MiB it holds ~40 MiB.
    const w = new Worker(WORKER, { workerData: this.#data, resourceLimits: { maxYoungGenerationSizeMb: 4 } });
    w.on('message', (r: ResourceReply) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      if (r.ok) p.resolve(r.result);
      else p.reject(new Error(r.error));
      this.#armIdle();
    });
    const gone = (why: string) => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      for (const p of this.#pending.values()) p.reject(new Error(`resource worker ${why}`));
      this.#pending.clear();
    };
    w.on('error', (err) => gone(`failed: ${err.message}`));
    w.on('exit', (code) => gone(`exited (${code})`));
    this.#worker = w;
    return w;
  }

  async close(): Promise<void> {
    clearTimeout(this.#idle);
    await this.#worker?.terminate();
  }

  ensureReplica(spec: VserverSpec, ctx: ReplicaContext): Promise<void> {
    return this.#call('ensureReplica', [spec, ctx]) as Promise<void>;
  }
  start(spec: VserverSpec, epoch: number, ctx: ReplicaContext): Promise<void> {
    return this.#call('start', [spec, epoch, ctx]) as Promise<void>;
  }
  stop(spec: VserverSpec, hard: boolean, reason: string): Promise<void> {
    return this.#call('stop', [spec, hard, reason]) as Promise<void>;
  }
  stopContainerOnly(spec: VserverSpec, reason: string): Promise<void> {
    return this.#call('stopContainerOnly', [spec, reason]) as Promise<void>;
  }
  observe(spec: VserverSpec): Promise<ResourceObservation> {
    return this.#call('observe', [spec]) as Promise<ResourceObservation>;
  }
  observeRunning(spec: VserverSpec): Promise<Pick<ResourceObservation, 'container' | 'health'>> {
    return this.#call('observeRunning', [spec]) as Promise<Pick<ResourceObservation, 'container' | 'health'>>;
  }
  cleanupStale(): Promise<void> {
    return this.#call('cleanupStale', []) as Promise<void>;
  }
}
