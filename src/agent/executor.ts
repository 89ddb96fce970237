/**
 * Carries out the node step's actions without holding up the agent's loop (a start can take seconds;
 * lease renewals cannot wait for it): one queue per vserver, so a vserver's start and stop never
 * overlap, and every outcome comes back as a NodeEvent for the next round.
 */
import type { NodeAction, NodeEvent } from '../cluster/node.ts';
import { errorMessage } from '../lib/errors.ts';

export interface ActionRunner {
  start(vserver: string, epoch: number, reason: string): Promise<void>;
  restart(vserver: string, epoch: number, reason: string): Promise<void>;
  stop(vserver: string, hard: boolean, reason: string): Promise<void>;
}

export class ActionExecutor {
  readonly #runner: ActionRunner;
  readonly #queues = new Map<string, Promise<void>>();
  readonly #busy = new Map<string, number>();
  #outcomes: NodeEvent[] = [];
  readonly #onOutcome: () => void;

  constructor(runner: ActionRunner, hooks: { onOutcome?: () => void } = {}) {
    this.#runner = runner;
    this.#onOutcome = hooks.onOutcome ?? (() => {});
  }

  submit(a: NodeAction): void {
    this.#enqueue(a.vserver, () => this.#run(a));
  }

  /** Upkeep of a vserver's resources (its replica) in the same queue, so it never overlaps a start or stop. */
  upkeep(vserver: string, task: () => Promise<void>): void {
    this.#enqueue(vserver, () => task().catch(() => undefined));
  }

  #enqueue(v: string, work: () => Promise<void>): void {
    this.#busy.set(v, (this.#busy.get(v) ?? 0) + 1);
    const prev = this.#queues.get(v) ?? Promise.resolve();
    const next = prev.then(work).finally(() => {
      const n = (this.#busy.get(v) ?? 1) - 1;
      if (n === 0) this.#busy.delete(v);
      else this.#busy.set(v, n);
      this.#onOutcome();
    });
    this.#queues.set(v, next);
  }

  /** True while an action of this vserver is queued or running (its observed state is in flux). */
  busy(vserver: string): boolean {
    return this.#busy.has(vserver);
  }

  /** Outcomes since the last call. */
  drain(): NodeEvent[] {
    const out = this.#outcomes;
    this.#outcomes = [];
    return out;
  }

  /** Resolves when every queued action has finished. */
  async idle(): Promise<void> {
    await Promise.all([...this.#queues.values()]);
  }

  async #run(a: NodeAction): Promise<void> {
    try {
      if (a.kind === 'stop') {
        await this.#runner.stop(a.vserver, a.hard, a.reason);
        this.#outcomes.push({ kind: 'stopped', vserver: a.vserver });
        return;
      }
      if (a.kind === 'start') await this.#runner.start(a.vserver, a.epoch, a.reason);
      else await this.#runner.restart(a.vserver, a.epoch, a.reason);
      this.#outcomes.push({ kind: 'started', vserver: a.vserver, epoch: a.epoch });
    } catch (err) {
      // A stop that failed (after the runner's own fallbacks) is never reported as done: the vserver
      // stays "stopping", visible to the operator, and the node step tries the stop again.
      const error = errorMessage(err);
      this.#outcomes.push(
        a.kind === 'stop'
          ? { kind: 'stop-failed', vserver: a.vserver, error }
          : { kind: 'start-failed', vserver: a.vserver, error },
      );
    }
  }
}
