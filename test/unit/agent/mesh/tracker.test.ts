/** The link tracker and the mesh state in simulated time (ms). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ReceivedHeartbeat } from '../../../../src/agent/mesh/codec.ts';
import { type LinkState, linkStats, linkStep, newLink } from '../../../../src/agent/mesh/link.ts';
import {
  describeMeshEvent,
  type MeshEvent,
  type MeshState,
  meshStep,
  newMesh,
} from '../../../../src/agent/mesh/mesh.ts';
import { meshReport } from '../../../../src/agent/mesh/view.ts';

const t = { intervalMs: 250, deadAfterMs: 1000 };
const BOOT = 7;

function beat(seq: number, sentAt = 0, echo = 0, hold = 0) {
  return { kind: 'heartbeat' as const, boot: BOOT, seq, sentAt, echo, hold };
}

test('link: up on the first heartbeat, down after dead_after without one, up again; each change once', () => {
  let s: LinkState = newLink(0);
  const changes: string[] = [];
  const feed = (input: Parameters<typeof linkStep>[1], now: number) => {
    const r = linkStep(s, input, now, t);
    s = r.state;
    if (r.change) changes.push(`${now} ${r.change.state}: ${r.change.reason}`);
    return r;
  };
  feed({ kind: 'tick' }, 250);
  assert.equal(s.state, 'unknown');
  feed(beat(1), 300);
  assert.equal(s.state, 'up');
  // heartbeats every 250 ms up to 2300, ticks every 250 ms up to 5000
  let seq = 1;
  for (let now = 550; now <= 5000; now += 250) {
    if (now <= 2300) feed(beat(++seq), now);
    feed({ kind: 'tick' }, now + 1);
  }
  assert.equal(s.state, 'down');
  assert.equal(s.since, 3301, 'down at the first tick 1000 ms after the last heartbeat');
  feed(beat(++seq), 6000);
  feed(beat(++seq), 6250);
  assert.deepEqual(changes, [
    '300 up: first heartbeat after 0.3 s',
    '3301 down: no heartbeat for 1001 ms (down after 1000 ms)',
    '6000 up: heartbeats again after 2.7 s down',
  ]);
  // never heard at all: down after dead_after from the start, with its own reason
  const r = linkStep(newLink(0), { kind: 'tick' }, 1000, t);
  assert.equal(r.change?.reason, 'no heartbeat since tracking began 1.0 s ago');
});

test('link: RTT last/avg/max from echoes minus the hold time', () => {
  let s = newLink(1000);
  const rtts = [0.4, 0.2, 1.2, 0.2];
  let now = 1000;
  rtts.forEach((rtt, i) => {
    now += 250;
    // we sent at now - rtt - hold; the peer held it 5 ms before answering
    s = linkStep(s, beat(i + 1, 0, now - rtt - 5, 5), now, t).state;
  });
  const st = linkStats(s, now, t);
  assert.ok(Math.abs(st.rttLastMs! - 0.2) < 1e-9);
  assert.ok(Math.abs(st.rttAvgMs! - 0.5) < 1e-9, `avg ${st.rttAvgMs}`);
  assert.ok(Math.abs(st.rttMaxMs! - 1.2) < 1e-9);
  // an echo from before tracking began (an earlier life of this process) is not a sample
  s = linkStep(s, beat(10, 0, 500, 0), now + 250, t).state;
  assert.ok(Math.abs(linkStats(s, now + 250, t).rttLastMs! - 0.2) < 1e-9);
});

test('link: loss over the last minute from sequence gaps and silence, then forgotten', () => {
  let s = newLink(0);
  let now = 0;
  // 50 s (the window holds the last 55 to 60 s): 200 packets sent, every 10th lost but the last
  for (let seq = 1; seq <= 200; seq++) {
    now = 10_000 + seq * 250;
    if (seq % 10 !== 0 || seq === 200) s = linkStep(s, beat(seq), now, t).state;
  }
  let st = linkStats(s, now, t);
  assert.equal(st.lostLastMinute, 19);
  assert.equal(st.receivedLastMinute, 181);
  assert.ok(Math.abs(st.lossPct! - 9.5) < 1e-9, `loss ${st.lossPct}`);
  assert.equal(s.lost, 19);
  // silent for 5 s: those packets count as lost already
  st = linkStats(s, now + 5000, t);
  assert.equal(st.lostLastMinute, 19 + 20, 'silent 5 s: 20 packets missing');
  // then the packets flow again; two minutes later the old losses are out of the window
  let seq = 220;
  for (now += 5000; now < 200_000; now += 250) s = linkStep(s, beat(++seq), now, t).state;
  st = linkStats(s, now, t);
  assert.equal(st.lossPct, 0);
  assert.ok(st.receivedLastMinute >= 215 && st.receivedLastMinute <= 240, String(st.receivedLastMinute));
});

test('link: replays and reordered packets change nothing; a restarted sender is accepted', () => {
  let s = linkStep(newLink(0), beat(5), 100, t).state;
  const r = linkStep(s, beat(5), 200, t);
  assert.equal(r.replay, true);
  assert.equal(r.state, s);
  assert.equal(linkStep(s, { ...beat(4) }, 200, t).replay, true);
  assert.equal(linkStep(s, { ...beat(99), boot: BOOT - 1 }, 200, t).replay, true);
  s = linkStep(s, { ...beat(1), boot: BOOT + 1 }, 300, t).state;
  assert.equal(s.boot, BOOT + 1);
  assert.equal(s.lost, 0, 'no gap counted across a restart');
});

const setup = {
  me: 'n1',
  myAddresses: ['10.0.0.11', '10.1.0.11'],
  peers: [
    { name: 'n2', addresses: ['10.0.0.12', '10.1.0.12'] },
    { name: 'w', addresses: ['10.0.0.13'] },
  ],
};

function hb(sender: string, link: number, seq: number): ReceivedHeartbeat {
  return {
    link,
    sender,
    receiver: 'n1',
    boot: BOOT,
    seq,
    sentAt: 0,
    echo: 0,
    hold: 0,
    view: Buffer.alloc(0),
  };
}

test('mesh: link events once, unreachable on all links once, reachable again; drops counted by reason', () => {
  let s: MeshState = newMesh(setup, 0);
  assert.equal(s.peers.w!.links.length, 1, 'w has one address: one shared link');
  const events: MeshEvent[] = [];
  const step = (input: Parameters<typeof meshStep>[1], now: number) => {
    const r = meshStep(s, input, now, t);
    s = r.state;
    events.push(...r.events);
  };
  let seq = 0;
  // both links of n2 and w's one link heard every 250 ms until 2000; then link 1 of n2 stops
  for (let now = 250; now <= 6000; now += 250) {
    seq++;
    if (now <= 4000) step({ kind: 'heartbeat', hb: hb('n2', 0, seq), from: 'x' }, now);
    if (now <= 2000) step({ kind: 'heartbeat', hb: hb('n2', 1, seq), from: 'x' }, now);
    step({ kind: 'heartbeat', hb: hb('w', 0, seq), from: 'x' }, now);
    step({ kind: 'tick' }, now + 1);
  }
  step({ kind: 'heartbeat', hb: hb('n2', 1, 1), from: '10.1.0.99:5405' }, 6100);
  step({ kind: 'drop', reason: 'mac', from: '10.0.0.99:1' }, 6200);
  step({ kind: 'heartbeat', hb: hb('n2', 1, ++seq), from: 'x' }, 6300);
  const text = events.map((e) => describeMeshEvent(e, e.kind === 'node' ? true : undefined));
  assert.deepEqual(text, [
    'link 0 to n2 up: first heartbeat after 0.3 s',
    'link 1 to n2 up: first heartbeat after 0.3 s',
    'link 0 to w up: first heartbeat after 0.3 s',
    'link 1 to n2 down: no heartbeat for 1001 ms (down after 1000 ms)',
    'link 0 to n2 down: no heartbeat for 1001 ms (down after 1000 ms)',
    'n2 unreachable on all links (link 0 silent for 1001 ms, link 1 silent for 3001 ms) while its lease is valid (it may still run vservers: a network problem, not a dead node)',
    'link 1 to n2 up: heartbeats again after 3.3 s down',
    'n2 reachable again on link 1 after 1.3 s',
  ]);
  assert.equal(s.dropped.replay, 1);
  assert.equal(s.dropped.mac, 1);
  assert.deepEqual(s.lastDrop, { reason: 'mac', from: '10.0.0.99:1', at: 6200 });

  const rep = meshReport(s, 6400, {
    node: 'n1',
    port: 5405,
    timing: t,
    myAddresses: setup.myAddresses,
    peerAddresses: Object.fromEntries(setup.peers.map((p) => [p.name, p.addresses])),
    problems: [],
    sent: 0,
    sendErrors: 0,
  });
  assert.deepEqual(
    rep.links.map((l) => [l.peer, l.link, l.local, l.remote, l.state]),
    [
      ['n2', 0, '10.0.0.11', '10.0.0.12', 'down'],
      ['n2', 1, '10.1.0.11', '10.1.0.12', 'up'],
      ['w', 0, '10.0.0.11', '10.0.0.13', 'up'],
    ],
  );
  assert.deepEqual(rep.lastDrop, { reason: 'mac', from: '10.0.0.99:1', node: null, agoMs: 200 });
  // A node of another release: its packets dropped as "version", shown with its name.
  step({ kind: 'drop', reason: 'version', from: '10.1.0.12' }, 6500);
  const later = meshReport(s, 6600, {
    node: 'n1',
    port: 5405,
    timing: t,
    myAddresses: setup.myAddresses,
    peerAddresses: Object.fromEntries(setup.peers.map((p) => [p.name, p.addresses])),
    problems: [],
    sent: 0,
    sendErrors: 0,
  });
  assert.equal(later.dropped.version, 1);
  assert.deepEqual(later.lastDrop, { reason: 'version', from: '10.1.0.12', node: 'n2', agoMs: 100 });
});
