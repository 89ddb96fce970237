/**
 * The replication simulation's runner (no cvserver needed):
 *   scripts/node test/sim/replication/run.ts [--seeds N] [--steps M] [--first S] [--seed S]
 *     [--profile ci|full] [--keep-going] [--verbose]
 * CVSERVER_SIM_SEED=S replays one seed exactly. Prints steps per second and fault counts; on a
 * failure, the seed, the violation and the last steps (and exits 1).
 */
import { parseArgs } from 'node:util';
import { runSeeds } from './runner.ts';

const USAGE = `usage: scripts/node test/sim/replication/run.ts [--seeds N] [--steps M] [--first S] [--seed S]
                  [--profile ci|full] [--keep-going] [--verbose]
  --seeds N      how many seeds, from --first (default 20)
  --steps M      steps per seed (default 2000)
  --first S      the first seed (default 1)
  --seed S       one seed only (or CVSERVER_SIM_SEED=S): replays it exactly
  --profile P    ci (what CI runs) or full (every fault kind, see docs/replication.md)
  --keep-going   run every seed (a sweep): print each failure, exit 1 if any
  --verbose      the engine's whole log on a failure`;

function fail(message: string): never {
  console.error(`run.ts: ${message}\n${USAGE}`);
  process.exit(2);
}

const OPTIONS = {
  seeds: { type: 'string', default: '20' },
  steps: { type: 'string', default: '2000' },
  first: { type: 'string', default: '1' },
  seed: { type: 'string' },
  verbose: { type: 'boolean', default: false },
  profile: { type: 'string', default: 'ci' },
  'keep-going': { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;
let args: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>;
try {
  args = parseArgs({ options: OPTIONS });
} catch (err) {
  fail((err as Error).message);
}
const { values } = args;
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const whole = (flag: string, v: string | undefined, min: number): number => {
  const n = Number(v);
  if (v === undefined || !Number.isSafeInteger(n) || n < min)
    fail(`${flag} "${v}": expected a whole number >= ${min}`);
  return n;
};
if (values.profile !== 'ci' && values.profile !== 'full')
  fail(`--profile "${values.profile}": expected ci or full`);
const profile: 'ci' | 'full' = values.profile;
const one = values.seed ?? process.env.CVSERVER_SIM_SEED;
const steps = whole('--steps', values.steps, 1);
const seeds =
  one !== undefined
    ? [whole(values.seed !== undefined ? '--seed' : 'CVSERVER_SIM_SEED', one, 0)]
    : Array.from(
        { length: whole('--seeds', values.seeds, 1) },
        (_, i) => whole('--first', values.first, 0) + i,
      );
const r = await runSeeds(seeds, steps, {
  verbose: values.verbose,
  profile,
  keepGoing: values['keep-going'],
  print: (s) => console.log(s),
});
process.exitCode = r.failed ? 1 : 0;
