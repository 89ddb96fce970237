/** A worker thread running a share of the seeds (the unit test spreads them over the cores). */
import { parentPort, workerData } from 'node:worker_threads';
import { describeFailure, runSeeds } from './runner.ts';

const { seeds, steps } = workerData as { seeds: number[]; steps: number };
const r = await runSeeds(seeds, steps);
parentPort!.postMessage({
  steps: r.steps,
  ms: r.ms,
  faults: r.faults,
  failure: r.failed ? describeFailure(r.failed) : undefined,
});
