/** Runs seeds one after the other and reports (the CLI runner and the unit test share it). */
import { configFor, type SimConfig, type SimResult, Simulation } from './simulation.ts';

export interface RunSummary {
  seeds: number;
  steps: number;
  ms: number;
  faults: Record<string, number>;
  /** The first failure (the only one without `keepGoing`). */
  failed: SimResult | undefined;
  /** Every failed seed (with `keepGoing`, all of them). */
  failedSeeds: number[];
  /** Seeds that ended without a primary for a reason the engine states. */
  stuckSeeds: number[];
}

export function describeFailure(r: SimResult, lastSteps = 40): string {
  const c = r.config;
  return [
    `SIMULATION FAILED: seed ${c.seed} (replay: CVSERVER_SIM_SEED=${c.seed} scripts/node test/sim/replication/run.ts --steps ${c.steps} --profile ${c.profile})`,
    `  ${r.violation!.kind}: ${r.violation!.detail}`,
    `  config: profile ${c.profile}, ${c.replicas} replicas${c.tiebreaker ? ' + tiebreaker' : ''}, quorum ${c.quorum}, durable writes ${c.durableWrites}; failed at step ${r.steps}, ${r.simulatedMs.toFixed(0)} ms simulated`,
    `  last steps:`,
    ...r.trace.slice(-lastSteps).map((s) => `    ${s}`),
    ...(r.log.length ? ['  last engine log lines:', ...r.log.slice(-25).map((s) => `    ${s}`)] : []),
  ].join('\n');
}

export async function runSeeds(
  seeds: number[],
  steps: number,
  o: {
    verbose?: boolean;
    profile?: SimConfig['profile'];
    print?: (s: string) => void;
    /** Run every seed (a sweep): each failure is printed, none stops the run. */
    keepGoing?: boolean;
  } = {},
): Promise<RunSummary> {
  const started = performance.now();
  const faults: Record<string, number> = {};
  let total = 0;
  let failed: SimResult | undefined;
  const failedSeeds: number[] = [];
  const stuckSeeds: number[] = [];
  let ran = 0;
  for (const seed of seeds) {
    ran++;
    const cfg = { ...configFor(seed, steps, o.profile), ...(o.verbose ? { verbose: true } : {}) };
    const r = await new Simulation(cfg).run();
    total += r.steps;
    for (const [k, v] of Object.entries(r.faults)) faults[k] = (faults[k] ?? 0) + v;
    if (r.stuck) {
      stuckSeeds.push(seed);
      o.print?.(`seed ${seed}: ${r.stuck}`);
    }
    if (r.violation) {
      failed ??= r;
      failedSeeds.push(seed);
      o.print?.(describeFailure(r, o.keepGoing ? 10 : 40));
      if (!o.keepGoing) break;
    }
  }
  const ms = performance.now() - started;
  const outcome = failed ? (o.keepGoing ? `failed: ${failedSeeds.length} of` : 'stopped after') : 'passed';
  o.print?.(
    `${outcome}: ${seeds.length === 1 ? `seed ${seeds[0]}` : `${ran} seeds`}, ${total} steps in ${(ms / 1000).toFixed(1)} s (${Math.round(total / (ms / 1000))} steps/s)${stuckSeeds.length ? `; ${stuckSeeds.length} ended without a primary (stated)` : ''}`,
  );
  o.print?.(
    `faults: ${Object.entries(faults)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  return { seeds: seeds.length, steps: total, ms, faults, failed, failedSeeds, stuckSeeds };
}
