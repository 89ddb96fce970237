/**
 * Two replicas and a tiebreaker: the link between the data nodes is cut while both still reach the
 * tiebreaker; the primary goes on acknowledging writes with its vote; then it dies. The manager sees
 * the other replica alive, its own disk UpToDate, and promotes it: the engine must refuse (the
 * tiebreaker witnessed the primary's newer generation), else acknowledged writes are lost. Once the
 * old primary is back, it is promoted and the other replica resyncs from it.
 * (Found by the simulation, `full` seed 1, once its agent promoted as the manager does.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { check } from '../../sim/replication/checker.ts';
import type { SimNode } from '../../sim/replication/sim-node.ts';
import { Simulation } from '../../sim/replication/simulation.ts';

test('a replica cut from the primary while both reach the tiebreaker is not promoted over the writes it missed', async () => {
  const sim = new Simulation({
    seed: 1,
    steps: 0,
    replicas: 2,
    tiebreaker: true,
    quorum: 'suspend-io',
    durableWrites: true,
    profile: 'full',
  });
  const trace = () => sim.trace.join('\n');
  for (const n of sim.nodes) await sim.start(n);
  const [n1, n2] = sim.dataNodes as [SimNode, SimNode];
  await sim.promote(n1);
  assert.equal(sim.primary, n1, trace());
  const writes = async () => {
    for (let i = 0; i < 4; i++) sim.write();
    await sim.advance(2000);
    sim.flush();
    await sim.advance(2000);
  };
  await writes();
  sim.net.partition(['n1'], ['n2']);
  await sim.advance(10_000);
  await writes();
  const missed = [...sim.model.acked.values()].filter((w) => !w.holders.has('n2'));
  assert.equal(missed.length, 4, `writes acknowledged without n2:\n${trace()}`);

  sim.crash(n1);
  sim.net.heal();
  await sim.advance(1000);
  await sim.promote(n2);
  assert.equal(sim.primary, undefined, `n2 promoted over the writes it missed:\n${trace()}`);
  assert.match(sim.refusals.get('n2') ?? '', /peer tb witnessed newer data of a primary/);
  assert.equal(check(sim), undefined);

  await sim.start(n1);
  await sim.advance(2000);
  await sim.promote(n1);
  assert.equal(sim.primary, n1, trace());
  await sim.advance(10_000);
  sim.report();
  assert.equal(check(sim, { converged: true }), undefined, trace());
});
