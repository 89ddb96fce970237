/**
 * The replication engine under deterministic simulation (test/sim/replication): 200 seeds of 2000
 * steps each in the `ci` profile, spread over the cores. A failure prints the seed, the violated
 * invariant and the last steps; `CVSERVER_SIM_SEED=S scripts/node test/sim/replication/run.ts`
 * replays it exactly. CVSERVER_SIM_SEEDS / CVSERVER_SIM_STEPS change the amount.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';

const SEEDS = Number(process.env.CVSERVER_SIM_SEEDS ?? 200);
const STEPS = Number(process.env.CVSERVER_SIM_STEPS ?? 2000);

interface Share {
  steps: number;
  ms: number;
  faults: Record<string, number>;
  failure: string | undefined;
}

function runShare(seeds: number[]): Promise<Share> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('../../sim/replication/worker.ts', import.meta.url), {
      workerData: { seeds, steps: STEPS },
    });
    w.once('message', (m: Share) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => {
      if (code !== 0) reject(new Error(`simulation worker exited with ${code}`));
    });
  });
}

test(`replication simulation: ${SEEDS} seeds x ${STEPS} steps, invariants checked after every step`, async () => {
  const workers = Math.max(1, Math.min(2, availableParallelism()));
  const shares: number[][] = Array.from({ length: workers }, () => []);
  for (let s = 1; s <= SEEDS; s++) shares[s % workers]!.push(s);
  const started = performance.now();
  const results = await Promise.all(shares.map(runShare));
  const secs = (performance.now() - started) / 1000;
  const steps = results.reduce((n, r) => n + r.steps, 0);
  const faults: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.faults)) faults[k] = (faults[k] ?? 0) + v;
  console.log(
    `simulation: ${steps} steps in ${secs.toFixed(1)} s on ${workers} threads (${Math.round(steps / secs)} steps/s); faults: ${Object.entries(
      faults,
    )
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  const failure = results.find((r) => r.failure)?.failure;
  assert.equal(failure, undefined, failure);
});
