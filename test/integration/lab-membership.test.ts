/**
 * End to end in a real lab (issue 11): `cvserver node remove` then `node add` of a full node holding a
 * replica — the one that runs the demo — while a client keeps writing to the demo:
 *  - clear refusals first (unknown node, asked of the node itself): nothing changed;
 *  - remove: the demo moves off it (a planned move: no acknowledged record lost), the replicas on the
 *    other nodes drop it as a peer while their daemons run (same daemon PID), its etcd member is
 *    removed, its agent stands down and exits;
 *  - add: an etcd learner, then the node's agent started as a new machine (empty state dir,
 *    `--initial-cluster-state existing`): it promotes itself to a voter, its replica of the demo's
 *    volume is created empty and resynced in full (UpToDate), the running primary having added it as
 *    a peer while running;
 *  - throughout: a surviving node reads the cluster from etcd at every sample (quorum never lost), no
 *    surviving node is fenced, and no acknowledged record is lost.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ClusterStatus } from '../../src/agent/status.ts';
import { eventsMatching, showEvents, sleep, TestLab, until, Writer } from '../helpers/lab.ts';

interface VolumeStatusJson {
  pid: number | null;
  daemon: { role?: string; replication?: { peers?: { node: string }[] } } | null;
}

async function volumeStatus(lab: TestLab, node: string): Promise<VolumeStatusJson> {
  const r = await lab.exec(node, ['volume', 'status', 'demo', '--json']);
  assert.ok(r.status === 0 || r.status === 3, r.stderr);
  return JSON.parse(r.stdout) as VolumeStatusJson;
}

/** Samples a survivor's view every 500 ms: its last read of etcd must stay fresh, nobody fenced. */
function watchQuorum(lab: TestLab, survivors: string[]) {
  const problems: string[] = [];
  let samples = 0;
  let maxStoreAge = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const node = survivors[samples % survivors.length]!;
      samples++;
      try {
        const s: ClusterStatus = await lab.status(node);
        const age = s.local.storeAgeMs ?? Number.POSITIVE_INFINITY;
        maxStoreAge = Math.max(maxStoreAge, age);
        if (age > 5000) problems.push(`${node}: last etcd read ${age} ms old`);
        if (s.local.fenced) problems.push(`${node}: fenced`);
        for (const n of survivors)
          if (s.nodes.find((x) => x.name === n)?.lease !== 'alive')
            problems.push(`${node} sees ${n}'s lease ended`);
      } catch (err) {
        problems.push(`${node}: status: ${err instanceof Error ? err.message : String(err)}`);
      }
      await sleep(500);
    }
  })();
  return {
    problems,
    get samples() {
      return samples;
    },
    get maxStoreAge() {
      return maxStoreAge;
    },
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

test('membership: node remove then add of the demo node, the client writing throughout', async (t) => {
  // A 5 s lease, as lab-operator's: a loaded 2-core machine can stall an agent for 2 s (a planned stop's
  // crun calls run on its main thread), which a 2 s lease turns into a fence and a failover.
  const lab = await TestLab.up(t, { letter: 'i', leaseTtl: 5 });
  const demo = await lab.demoHealthy(90_000);
  const target = demo.node;
  const survivors = lab.nodes.filter((n) => n !== target);
  const other = survivors[0]!;
  const writer = new Writer(lab.demoUrl, 'mb').start();
  t.after(() => writer.stop());
  const quorum = watchQuorum(lab, survivors);
  t.after(() => quorum.stop());
  await sleep(2000);

  // Refused, nothing changed.
  const unknown = await lab.exec(other, ['node', 'remove', 'n9']);
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /refused: no node named "n9".*nothing changed/);
  const self = await lab.exec(target, ['node', 'remove', target]);
  assert.notEqual(self.status, 0);
  assert.match(self.stderr, /refused: run it from another node/);
  assert.equal((await lab.whereIsDemo()).node, target, 'a refusal moved nothing');

  // The replicas that stay, and their daemons (they must drop the peer while running).
  const before = new Map<string, number | null>();
  for (const n of survivors) before.set(n, (await volumeStatus(lab, n)).pid);

  const removeAt = Date.now();
  const r = await lab.exec(other, ['node', 'remove', target, '--json'], 240_000);
  assert.equal(r.status, 0, r.stderr);
  const removed = JSON.parse(r.stdout) as { moved: string[]; steps: string[]; seconds: number };
  t.diagnostic(`node remove ${target}: ${r.stdout.trim()}`);
  assert.deepEqual(removed.moved, ['demo']);
  assert.deepEqual(
    removed.steps.filter((x) => x !== 'move-leader'),
    ['mark-removed', 'member-remove'],
  );
  lab.away.add(target);
  const moved = await lab.demoHealthy(30_000, target);
  await until(
    `${target}'s agent standing down`,
    async () =>
      eventsMatching(
        await lab.events(other),
        new RegExp(`^${target} was removed from the cluster`),
        removeAt,
        target,
      ).length > 0 || undefined,
    30_000,
  );
  await until(
    `the replicas on ${survivors.join(', ')} dropping ${target} as a peer`,
    async () => {
      for (const n of survivors) {
        const v = await volumeStatus(lab, n);
        if (v.daemon?.replication?.peers?.some((p) => p.node === target)) return undefined;
      }
      return true;
    },
    30_000,
  );
  for (const n of survivors)
    assert.equal((await volumeStatus(lab, n)).pid, before.get(n), `${n}'s volume daemon kept running`);
  let status = await lab.status(other);
  assert.ok(!status.nodes.some((n) => n.name === target), `${target} is no node of the cluster now`);
  assert.deepEqual(
    status.vservers
      .find((v) => v.name === 'demo')
      ?.replicas.map((x) => x.node)
      .sort(),
    [...survivors].sort(),
  );
  const removedAgain = await lab.exec(other, ['node', 'remove', target]);
  assert.match(removedAgain.stderr, /already removed/);
  // The operator's cluster.yaml, unchanged, still applies (the stored one keeps the removed node's entry).
  const applied = await lab.exec(other, ['apply', `${lab.dir}/cluster.yaml`, '--dry-run']);
  assert.equal(applied.status, 0, applied.stderr);

  // Back, as a new machine: empty disk, joins the running cluster.
  const addAt = Date.now();
  // `node add --wait` returns once the node's agent is up and its replicas are up to date: its agent is
  // started meanwhile (a joining member that finds no learner yet waits for it).
  const adding = lab.exec(
    other,
    ['node', 'add', target, '--address', lab.nodeAddress(target), '--wait', '--timeout', '150', '--json'],
    180_000,
  );
  await sleep(1500);
  await lab.lab('start', target, '--join');
  lab.away.delete(target);
  const a = await adding;
  assert.equal(a.status, 0, a.stderr);
  t.diagnostic(`node add ${target} --wait: ${a.stdout.trim()}`);
  const added = JSON.parse(a.stdout) as { steps: string[]; memberId: string | null; seconds: number };
  assert.deepEqual(added.steps, ['member-add-learner', 'unmark-removed']);
  assert.ok(added.memberId);
  const joined = await lab.demoReplicaInSync(target, 150_000, undefined, other);
  const joinSeconds = (Date.now() - addAt) / 1000;
  assert.equal(joined.nodes.find((n) => n.name === target)?.lease, 'alive');
  await until(
    `${target}'s etcd member promoted`,
    async () =>
      eventsMatching(await lab.events(other), /promoted from learner to voter/, addAt, target).length > 0 ||
      undefined,
    60_000,
  );
  // The primary added it as a peer while running (same daemon).
  const primary = (await lab.whereIsDemo(other)).node;
  assert.equal(
    (await volumeStatus(lab, primary)).pid,
    before.get(primary),
    'the primary was never restarted',
  );

  await sleep(2000);
  await writer.stop();
  await quorum.stop();
  const events = await lab.events(other);
  const log = showEvents(events, removeAt);
  t.diagnostic(log);
  status = await lab.status(other);
  assert.ok(
    status.etcd.every((m) => m.healthy),
    `every etcd member healthy: ${JSON.stringify(status.etcd)}`,
  );
  assert.deepEqual(quorum.problems, [], `quorum kept, nobody fenced (${quorum.samples} samples)`);
  assert.deepEqual(eventsMatching(events, /^fence/, removeAt), [], log);
  assert.deepEqual(writer.lost(await lab.records()), [], 'no acknowledged record lost');
  assert.ok(writer.ackedAfter(addAt).length > 10, 'the client kept writing');
  t.diagnostic(
    `remove ${removed.seconds.toFixed(1)} s (demo moved to ${moved.node}), add to UpToDate ${joinSeconds.toFixed(1)} s (node add --wait: ${added.seconds.toFixed(1)} s); ` +
      `client: ${writer.acks.length} acknowledged, ${writer.failures} failed, longest gap ${writer.longestGap()} ms; ` +
      `quorum samples ${quorum.samples}, oldest etcd read ${quorum.maxStoreAge} ms`,
  );
});
