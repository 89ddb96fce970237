import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mulberry32 } from '../../../src/sim/prng.ts';
import { clusterSchema, type ScriptCommand } from '../../../src/sim/scenario.ts';
import { Simulator } from '../../../src/sim/simulator.ts';

/**
 * 3000 ticks of random failures on 3-5 nodes and 12 vservers with the invariants checked every tick, then
 * the failures stop and everything must run again within 60 ticks. `nodeFaults` adds the node-side
 * faults (store unreachable, agent hung), for which the lease invariant matters.
 */
function randomRun(nodeFaults: boolean): void {
  const seed = Number(process.env.CVSERVER_SIM_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`CVSERVER_SIM_SEED=${seed}`);
  const rand = mulberry32(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const nodes = Array.from({ length: 3 + Math.floor(rand() * 3) }, (_, i) => `n${i + 1}`);
  const names = Array.from({ length: 12 }, (_, i) => `v${i + 1}`);
  const vservers: Record<string, unknown> = {};
  for (const v of names) {
    const reps = [...nodes].sort(() => rand() - 0.5).slice(0, 2 + Math.floor(rand() * 2));
    vservers[v] = { replicas: reps, preferred: reps.slice(0, 1 + Math.floor(rand() * 2)) };
  }
  const cfg = clusterSchema.parse({ nodes, vservers, policy: { lease_ttl: 6, failure_timeout: 60 } });
  const sim = new Simulator(cfg);
  const steps = 3000;
  for (let i = 0; i < steps; i++) {
    if (rand() < 0.05) {
      const n = pick(nodes);
      const v = pick(names);
      const c: ScriptCommand = pick<ScriptCommand>([
        { kind: 'power', on: false, node: n },
        { kind: 'power', on: true, node: n },
        { kind: 'network', up: false, node: n },
        { kind: 'network', up: true, node: n },
        ...(nodeFaults
          ? ([
              { kind: 'store', up: false, node: n },
              { kind: 'store', up: true, node: n },
              { kind: 'agent', hung: true, node: n },
              { kind: 'agent', hung: false, node: n },
            ] as ScriptCommand[])
          : []),
        { kind: 'fail-health', vserver: v },
        { kind: 'migrate', vserver: v, node: n },
        { kind: 'standby', node: n, on: rand() < 0.5 },
        { kind: 'maintenance', on: rand() < 0.3 },
        { kind: 'set', vserver: v, desired: rand() < 0.8 ? 'started' : 'stopped' },
        { kind: 'failover' },
        { kind: 'break', vserver: v, broken: rand() < 0.3 },
        { kind: 'clear', vserver: v },
        { kind: 'replica', vserver: v, node: n, upToDate: false },
      ]);
      // Losing writes on the only up-to-date copy is data loss, not a failure the cluster can recover from.
      const reps =
        c.kind === 'replica' ? [...sim.replicas.get(c.vserver)!.values()].filter((r) => r.upToDate) : [];
      if (c.kind !== 'replica' || reps.length >= 2) sim.apply(c, c.kind);
    }
    sim.tick();
    assert.deepEqual(sim.violations, [], `seed ${seed}`);
  }
  // Failures stop: every node up and connected, no standby or maintenance, failures cleared.
  for (const n of nodes) {
    sim.apply({ kind: 'power', on: true, node: n }, 'power on');
    sim.apply({ kind: 'network', up: true, node: n }, 'network restore');
    sim.apply({ kind: 'store', up: true, node: n }, 'store restore');
    sim.apply({ kind: 'agent', hung: false, node: n }, 'agent resume');
    sim.apply({ kind: 'standby', on: false, node: n }, 'unstandby');
  }
  sim.apply({ kind: 'maintenance', on: false }, 'maintenance off');
  for (const v of names) {
    sim.apply({ kind: 'break', vserver: v, broken: false }, 'fix');
    sim.apply({ kind: 'clear', vserver: v }, 'clear');
  }
  let settled = -1;
  for (let i = 0; i < 60 && settled < 0; i++) {
    sim.tick();
    if (sim.healthyCount().missing.length === 0) settled = i;
  }
  assert.deepEqual(sim.violations, [], `seed ${seed}`);
  assert.ok(
    settled >= 0,
    `seed ${seed}: not running after 60 steps: ${sim.healthyCount().missing.join(', ')}\n${sim.log.slice(-40).join('\n')}`,
  );
}

test('randomised failures keep the invariants, and everything runs again once failures stop', () => {
  randomRun(false);
});

test('randomised failures with store cuts and hung agents keep the invariants (the lease one too), and everything runs again', () => {
  randomRun(true);
});
