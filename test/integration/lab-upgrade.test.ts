/**
 * Rolling upgrade, the cluster format gate (src/agent/format.ts), in a real lab: a cluster that stores a
 * format its agents do not know (as when the next release raised it) makes every running agent stop
 * acting while it keeps its lease and what runs (the demo stays where it is, same epoch); an agent that
 * starts on such a cluster exits with one line; once the format is one they read, they act again.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadNodeCredentials } from '../../src/agent/credentials.ts';
import { EtcdClient } from '../../src/agent/etcd/client.ts';
import { keysFor } from '../../src/agent/records.ts';
import { eventsMatching, showEvents, sleep, TestLab, until } from '../helpers/lab.ts';

test('a stored format the agents do not know: they stop acting and keep the demo running; a starting agent exits with one line', async (t) => {
  const lab = await TestLab.up(t, { letter: 'p' });
  const demo = await lab.demoHealthy(60_000);
  const before = await lab.status();
  assert.equal(before.format, 1);
  assert.ok(
    before.nodes.every((n) => n.formats === '1-1'),
    JSON.stringify(before.nodes),
  );
  const cluster = before.cluster;
  const client = new EtcdClient({
    // The demo's node: the test never takes it away.
    endpoints: [`https://${lab.nodeAddress(demo.node)}:2379`],
    ...loadNodeCredentials(join(lab.dir, 'tls'), 'n1'),
    timeoutMs: 2000,
  });
  const key = keysFor(cluster).format;
  // The first agent recorded format 1.
  const recorded = await client.range(key, {});
  assert.equal(JSON.parse(recorded.kvs[0]?.value ?? '{}').format, 1);

  const began = Date.now();
  await client.put(key, JSON.stringify({ format: 2, at: Date.now(), by: 'next-release' }), {});
  const line = `cluster ${cluster} stores format 2; this agent (cvserver 0.2.0) reads formats 1-1: upgrade cvserver on this node first`;
  for (const n of lab.nodes)
    await until(`${n} to stop acting`, async () => (await lab.status(n)).local.refusal === line, 10_000);
  const refused = await lab.status();
  assert.equal(refused.manager, null, 'the manager gave up its key');
  // Nothing fails over: every lease stays, the demo keeps running where it was.
  await sleep(3000);
  const still = await lab.status(demo.node);
  assert.ok(still.nodes.every((n) => n.lease === 'alive'));
  const place = await lab.whereIsDemo(demo.node);
  assert.deepEqual([place.node, place.epoch], [demo.node, demo.epoch]);
  const refusedOp = await lab.exec(demo.node, ['maintenance', 'on']);
  assert.notEqual(refusedOp.status, 0);
  assert.match(refusedOp.stderr, /does not act on the cluster: cluster .* stores format 2/);

  // An agent that starts on it: one line, non-zero exit. (A node other than the demo's: power cut, boot.)
  const other = lab.nodes.find((n) => n !== demo.node)!;
  await lab.kill(other);
  await lab.start(other);
  const log = join(lab.dir, 'nodes', other, 'agent.log');
  await until(
    `${other}'s agent to refuse`,
    () => existsSync(log) && readFileSync(log, 'utf8').includes(`cvserver: ${line}`),
    30_000,
  );
  lab.away.add(other);

  // Back to a format they read: they act again and the manager returns; the demo never moved.
  await client.put(key, JSON.stringify({ format: 1, at: Date.now(), by: 'test' }), {});
  await until(
    'the agents to act again',
    async () => {
      const s = await lab.status(demo.node);
      return s.local.refusal === '' && s.manager !== null;
    },
    15_000,
  );
  const after = await lab.whereIsDemo(demo.node);
  assert.equal(after.epoch, demo.epoch);
  const events = await lab.events(demo.node);
  const text = showEvents(events, began);
  t.diagnostic(text);
  assert.ok(
    eventsMatching(events, /this agent stops acting on the cluster .*stores format 2/, began).length >= 2,
    text,
  );
  assert.ok(eventsMatching(events, /gave up the manager key/, began).length === 1, text);
  assert.ok(eventsMatching(events, /acts on the cluster again/, began).length >= 2, text);
});
