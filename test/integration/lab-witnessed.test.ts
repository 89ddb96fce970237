/**
 * End to end in a real lab (two full nodes and a witness, whose tiebreaker votes for the demo's
 * volume): the link between the full nodes only is cut, the demo's node goes on acknowledging with the
 * witness's vote, then loses power. The other node's disk still says UpToDate, but its replica missed
 * acknowledged writes: it is refused promotion (the witness's tiebreaker witnessed the newer data),
 * reported behind, and the demo waits. The demo's node back: the demo runs again with every
 * acknowledged record.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../helpers/cli.ts';
import { eventsMatching, run, showEvents, sleep, TestLab, Writer } from '../helpers/lab.ts';

const CVSERVER = join(ROOT, 'bin', 'cvserver');

test('a replica cut from the demo node while both reach the witness is not promoted over the writes it missed', async (t) => {
  const lab = await TestLab.up(t, { letter: 'j', witness: true });
  const before = await lab.demoHealthy(60_000);
  const other = before.node === 'n1' ? 'n2' : 'n1';
  await lab.demoReplicaInSync(other, 60_000);
  const writer = new Writer(lab.demoUrl, 'wit').start();
  t.after(() => writer.stop()); // also when an assertion fails: its loop would keep the test alive
  await sleep(2000);

  // Only the link between the two full nodes: each keeps reaching the witness (and etcd through it).
  const blackhole = (node: string, peer: string, op: 'add' | 'del') =>
    run(CVSERVER, [
      'lab',
      'exec',
      node,
      '--name',
      lab.name,
      '--',
      'ip',
      'route',
      op,
      'blackhole',
      `${lab.nodeAddress(peer)}/32`,
    ]);
  const cutAt = Date.now();
  for (const [a, b] of [
    [before.node, other],
    [other, before.node],
  ] as const) {
    const r = await blackhole(a, b, 'add');
    assert.equal(r.status, 0, `blackhole on ${a}: ${r.stderr}`);
  }
  await sleep(12_000);
  const ackedAfterCut = writer.acks.filter((a) => a.at > cutAt + 8000).length;
  t.diagnostic(`acknowledged while the full nodes could not reach each other: ${ackedAfterCut}`);
  assert.ok(ackedAfterCut > 0, 'the demo node went on acknowledging with the witness');

  const killAt = Date.now();
  await lab.kill(before.node);
  await sleep(25_000);
  const events = await lab.events();
  const now = await lab.whereIsDemo();
  assert.notEqual(
    now.node,
    other,
    `the demo ran on ${other} over writes it missed\n${showEvents(events, killAt)}`,
  );
  t.diagnostic(
    eventsMatching(events, /behind|witnessed|refused/, killAt)
      .map((e) => `${e.node}: ${e.text}`)
      .join('\n'),
  );

  // The link back (the routes stay in the namespaces across the power cut), the node back.
  await blackhole(other, before.node, 'del');
  await blackhole(before.node, other, 'del');
  await lab.start(before.node);
  const back = await lab.demoHealthy(90_000);
  assert.equal(back.node, before.node, 'the demo runs again where the acknowledged writes are');
  await writer.stop();
  const lost = writer.lost(await lab.records());
  assert.deepEqual(lost, [], `acknowledged records lost: ${lost.map((a) => a.n).join(',')}`);
  // The replica that was behind is resynced from it.
  await lab.demoReplicaInSync(other, 60_000);
  t.diagnostic(
    `demo back on ${back.node} (epoch ${back.epoch}); ${writer.acks.length} acknowledged, none lost`,
  );
});
