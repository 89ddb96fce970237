/**
 * Time per decision round of the cluster manager for a 5-node, 200-vserver cluster (target < 5 ms).
 * Baseline in the same run: the bare cost of cloning the state, which every step pays.
 *   scripts/node bench/manager.ts
 */
import { performance } from 'node:perf_hooks';
import { cloneState, step } from '../src/cluster/manager.ts';
import { clusterSchema } from '../src/sim/scenario.ts';
import { Simulator } from '../src/sim/simulator.ts';

const nodes = ['n1', 'n2', 'n3', 'n4', 'n5'];
const vservers: Record<string, unknown> = {};
for (let i = 0; i < 200; i++) {
  const reps = [nodes[i % 5]!, nodes[(i + 1) % 5]!, nodes[(i + 2) % 5]!];
  vservers[`v${i}`] = { replicas: reps, preferred: reps.slice(0, 2) };
}
const sim = new Simulator(clusterSchema.parse({ nodes, vservers }));
// Warm-up (JIT) rounds, not timed.
for (let i = 0; i < 5; i++) sim.tick();
for (let i = 0; i < 200; i++) step(sim.stored, sim.observe(), sim.now, [], sim.policy);

const manager: number[] = [];
const clone: number[] = [];

for (let i = 0; i < 400; i++) {
  // Failures along the way so steps include reassignment, not only idle rounds.
  if (i % 100 === 10)
    sim.apply({ kind: 'power', on: false, node: nodes[Math.floor(i / 100) % 5]! }, 'power off');
  if (i % 100 === 60)
    sim.apply({ kind: 'power', on: true, node: nodes[Math.floor(i / 100) % 5]! }, 'power on');
  if (i % 7 === 0) sim.apply({ kind: 'fail-health', vserver: `v${i % 200}` }, 'fail health');
  sim.tick();
  const obs = sim.observe();
  let t = performance.now();
  step(sim.stored, obs, sim.now, [], sim.policy);
  manager.push(performance.now() - t);
  t = performance.now();
  cloneState(sim.stored);
  clone.push(performance.now() - t);
}
const q = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const m = q(manager, 0.5);
const c = q(clone, 0.5);
console.log(`manager step, 5 nodes, 200 vservers, ${manager.length} steps`);
console.log(`  median ${m.toFixed(3)} ms   p99 ${q(manager, 0.99).toFixed(3)} ms   (target < 5 ms)`);
console.log(
  `  baseline: state copy alone: median ${c.toFixed(3)} ms; step/clone ratio ${(m / c).toFixed(1)}x`,
);
console.log(`  invariant violations during the run: ${sim.violations.length}`);
