/**
 * The replication simulation's runner (no cvserver needed):
 *   scripts/node test/sim/replication/run.ts [--seeds N] [--steps M] [--first S] [--seed S]
 *     [--profile ci|full] [--verbose]
 * CVSERVER_SIM_SEED=S replays one seed exactly. Prints steps per second and fault counts; on a
 * failure, the seed, the violation and the last steps (and exits 1).
 */
import { parseArgs } from 'node:util';
import { runSeeds } from './runner.ts';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '20' },
    steps: { type: 'string', default: '2000' },
    first: { type: 'string', default: '1' },
    seed: { type: 'string' },
    verbose: { type: 'boolean', default: false },
    profile: { type: 'string', default: 'ci' },
  },
});
const one = values.seed ?? process.env.CVSERVER_SIM_SEED;
const seeds =
  one !== undefined
    ? [Number(one)]
    : Array.from({ length: Number(values.seeds) }, (_, i) => Number(values.first) + i);
const r = await runSeeds(seeds, Number(values.steps), {
  verbose: values.verbose,
  print: (s) => console.log(s),
});
process.exitCode = r.failed ? 1 : 0;
