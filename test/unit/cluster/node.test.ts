import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AssignmentTable } from '../../../src/cluster/assignments.ts';
import {
  afterRestart,
  emptyLocal,
  type LocalVserver,
  type NodeEvent,
  type NodeLocal,
  type NodeTiming,
  nodeStep,
} from '../../../src/cluster/node.ts';

const timing: NodeTiming = { leaseTtl: 10, fenceMargin: 2 };

/** n1 with a lease renewed at `sentAt`, the table and the vservers given. */
function node(
  sentAt: number | null,
  table: AssignmentTable | null,
  vservers: Record<string, LocalVserver> = {},
  extra: Partial<NodeLocal> = {},
): NodeLocal {
  return {
    ...emptyLocal('n1'),
    leaseUntil: sentAt === null ? null : sentAt + timing.leaseTtl,
    table,
    vservers,
    ...extra,
  };
}
const on = (node: string, epoch: number, restarts = 0) => ({ node, epoch, restarts });
const lv = (status: LocalVserver['status'], epoch = 1, since = 0, restarts = 0): LocalVserver => ({
  status,
  since,
  epoch,
  restarts,
});

/** Actions as short strings: "start web 3", "restart web 1", "stop web hard", "stop web soft". */
function summary(local: NodeLocal, events: NodeEvent[], now: number) {
  const r = nodeStep(local, events, now, timing);
  const actions = r.actions.map((a) =>
    a.kind === 'stop' ? `stop ${a.vserver} ${a.hard ? 'hard' : 'soft'}` : `${a.kind} ${a.vserver} ${a.epoch}`,
  );
  const status = Object.fromEntries(Object.entries(r.reports).map(([v, x]) => [v, `${x.status}@${x.since}`]));
  return { actions, status, fenced: r.local.fenced, log: r.log };
}

interface Case {
  name: string;
  local: NodeLocal;
  events?: NodeEvent[];
  now: number;
  actions: string[];
  status: Record<string, string>;
  fenced?: boolean;
  log?: RegExp;
}

const cases: Case[] = [
  {
    name: 'starts what the table assigns to it',
    local: node(5, { web: on('n1', 3), db: on('n2', 1) }),
    now: 6,
    actions: ['start web 3'],
    status: { web: 'starting@6' },
    log: /^web: start with epoch 3 \(assigned\)$/,
  },
  {
    name: 'a table read this round counts',
    local: node(5, null),
    events: [{ kind: 'assignments', table: { web: on('n1', 1) } }],
    now: 6,
    actions: ['start web 1'],
    status: { web: 'starting@6' },
  },
  {
    name: 'starts nothing without a lease',
    local: node(null, { web: on('n1', 1) }),
    now: 6,
    actions: [],
    status: {},
    fenced: false,
  },
  {
    name: 'starts nothing inside the fence margin (and fences)',
    local: node(0, { web: on('n1', 1) }),
    now: 8,
    actions: [],
    status: {},
    fenced: true,
    log: /^fence: no renewal acknowledged since 0\.0 \(lease valid until 10\.0 at the latest\): nothing running$/,
  },
  {
    name: 'runs on just before the fence',
    local: node(0, { web: on('n1', 1) }, { web: lv('healthy') }),
    now: 7.9,
    actions: [],
    status: { web: 'healthy@0' },
    fenced: false,
  },
  {
    name: 'fences at leaseUntil - fenceMargin: every active vserver stopped hard',
    local: node(
      0,
      { web: on('n1', 1), db: on('n1', 2), old: on('n2', 5) },
      { web: lv('healthy'), db: lv('starting', 2), old: lv('stopping', 4) },
    ),
    now: 8,
    actions: ['stop db hard', 'stop old hard', 'stop web hard'],
    status: { web: 'stopping@8', db: 'stopping@8', old: 'stopping@8' },
    fenced: true,
    log: /^fence: no renewal acknowledged since 0\.0 \(lease valid until 10\.0 at the latest\): stopping db, old, web hard$/,
  },
  {
    name: 'a renewal this round keeps it running',
    local: node(0, { web: on('n1', 1) }, { web: lv('healthy') }),
    events: [{ kind: 'renewed', sentAt: 7 }],
    now: 8,
    actions: [],
    status: { web: 'healthy@0' },
    fenced: false,
  },
  {
    name: 'an old renewal acknowledged late does not lower the lease',
    local: node(5, { web: on('n1', 1) }, { web: lv('healthy') }),
    events: [{ kind: 'renewed', sentAt: 1 }],
    now: 12,
    actions: [],
    status: { web: 'healthy@0' },
    fenced: false,
  },
  {
    name: 'lease-lost fences at once',
    local: node(5, { web: on('n1', 1) }, { web: lv('healthy') }),
    events: [{ kind: 'lease-lost', reason: 'keepalive: lease not found' }],
    now: 6,
    actions: ['stop web hard'],
    status: { web: 'stopping@6' },
    fenced: true,
    log: /^fence: lease lost: keepalive: lease not found: stopping web hard$/,
  },
  {
    name: 'while fenced it starts nothing, even with a valid lease',
    local: node(20, { web: on('n1', 2) }, {}, { fenced: true, fencedAt: 20 }),
    events: [{ kind: 'renewed', sentAt: 20 }],
    now: 21,
    actions: [],
    status: {},
    fenced: true,
  },
  {
    name: 'a renewal sent after the fence unfences, and assignments apply again',
    local: node(0, { web: on('n1', 2) }, {}, { fenced: true, fencedAt: 8 }),
    events: [{ kind: 'renewed', sentAt: 9 }],
    now: 9,
    actions: ['start web 2'],
    status: { web: 'starting@9' },
    fenced: false,
    log: /^unfence: renewal sent at 9\.0 acknowledged \(lease valid until 19\.0\): assignments apply again$/,
  },
  {
    name: 'stops (soft) what the table gives to another node',
    local: node(5, { web: on('n2', 2) }, { web: lv('healthy') }),
    now: 6,
    actions: ['stop web soft'],
    status: { web: 'stopping@6' },
    log: /^web: stop: not assigned to this node any more \(now on n2\)$/,
  },
  {
    name: 'stops (soft) what the table no longer holds',
    local: node(5, {}, { web: lv('failed') }),
    now: 6,
    actions: ['stop web soft'],
    status: { web: 'stopping@6' },
    log: /removed from the table/,
  },
  {
    name: 'a stop in progress: not started again, not stopped twice',
    local: node(5, { web: on('n1', 2) }, { web: lv('stopping', 1, 4) }),
    now: 6,
    actions: [],
    status: { web: 'stopping@4' },
  },
  {
    name: 'once stopped, a newer assignment starts',
    local: node(5, { web: on('n1', 2) }, { web: lv('stopping', 1, 4) }),
    events: [{ kind: 'stopped', vserver: 'web' }],
    now: 6,
    actions: ['start web 2'],
    status: { web: 'starting@6' },
  },
  {
    name: 'a soft stop completed: forgotten (nothing reported)',
    local: node(5, { web: on('n2', 2) }, { web: lv('stopping', 1, 4) }),
    events: [{ kind: 'stopped', vserver: 'web' }],
    now: 6,
    actions: [],
    status: {},
  },
  {
    name: 'stopped while still assigned here (fenced, rebooted): reported stopped, not restarted by itself',
    local: node(5, { web: on('n1', 1) }, { web: lv('stopped', 1, 3) }),
    now: 6,
    actions: [],
    status: { web: 'stopped@3' },
  },
  {
    name: 'a stopped copy is started again only for a new epoch',
    local: node(5, { web: on('n1', 2) }, { web: lv('stopped', 1, 3) }),
    now: 6,
    actions: ['start web 2'],
    status: { web: 'starting@6' },
    log: /^web: start with epoch 2 \(assigned\)$/,
  },
  {
    name: 'a stopped copy assigned elsewhere is forgotten',
    local: node(5, { web: on('n2', 2) }, { web: lv('stopped', 1, 3) }),
    now: 6,
    actions: [],
    status: {},
    log: /^web: forgotten: not assigned to this node any more \(now on n2\)$/,
  },
  {
    name: 'a higher restart count restarts in place with the same epoch',
    local: node(5, { web: on('n1', 1, 1) }, { web: lv('failed', 1, 4) }),
    now: 6,
    actions: ['restart web 1'],
    status: { web: 'starting@6' },
    log: /^web: restart with epoch 1 \(restart 1 requested\)$/,
  },
  {
    name: 'a failed vserver is not restarted by the node itself',
    local: node(5, { web: on('n1', 1) }, { web: lv('failed', 1, 4) }),
    now: 6,
    actions: [],
    status: { web: 'failed@4' },
  },
  {
    name: 'started -> running, then healthy on the first healthy check',
    local: node(5, { web: on('n1', 1) }, { web: lv('starting', 1, 4) }),
    events: [
      { kind: 'started', vserver: 'web', epoch: 1 },
      { kind: 'health', vserver: 'web', healthy: true },
    ],
    now: 6,
    actions: [],
    status: { web: 'healthy@6' },
  },
  {
    name: 'started without a health check yet: running',
    local: node(5, { web: on('n1', 1) }, { web: lv('starting', 1, 4) }),
    events: [{ kind: 'started', vserver: 'web', epoch: 1 }],
    now: 6,
    actions: [],
    status: { web: 'running@6' },
  },
  {
    name: 'a start of an older epoch completing is ignored',
    local: node(5, { web: on('n1', 2) }, { web: lv('starting', 2, 4) }),
    events: [{ kind: 'started', vserver: 'web', epoch: 1 }],
    now: 6,
    actions: [],
    status: { web: 'starting@4' },
  },
  {
    name: 'a failed start reports failed',
    local: node(5, { web: on('n1', 1) }, { web: lv('starting', 1, 4) }),
    events: [{ kind: 'start-failed', vserver: 'web', error: 'mount: no such device' }],
    now: 6,
    actions: [],
    status: { web: 'failed@6' },
    log: /^web: start failed: mount: no such device/,
  },
  {
    name: 'a failed health check reports failed',
    local: node(5, { web: on('n1', 1) }, { web: lv('healthy', 1, 4) }),
    events: [{ kind: 'health', vserver: 'web', healthy: false }],
    now: 6,
    actions: [],
    status: { web: 'failed@6' },
  },
  {
    name: 'a crash reports failed',
    local: node(5, { web: on('n1', 1) }, { web: lv('running', 1, 4) }),
    events: [{ kind: 'crashed', vserver: 'web', reason: 'exit 137' }],
    now: 6,
    actions: [],
    status: { web: 'failed@6' },
    log: /^web: crashed: exit 137/,
  },
  {
    name: 'a failed stop stays stopping, and its retry is planned',
    local: node(5, { web: on('n2', 2) }, { web: lv('stopping', 1, 4) }),
    events: [{ kind: 'stop-failed', vserver: 'web', error: 'timed out waiting for /dev/loop0 to detach' }],
    now: 6,
    actions: [],
    status: { web: 'stopping@4' },
    log: /^web: stop failed: timed out waiting for \/dev\/loop0 to detach \(stays stopping; tried again in 1 s\)/,
  },
  {
    name: 'a failed stop is tried again when its retry is due (its container gone or not)',
    local: node(5, { web: on('n2', 2) }, { web: { ...lv('stopping', 1, 4), stopRetryAt: 6 } }),
    events: [{ kind: 'crashed', vserver: 'web', reason: 'container absent' }],
    now: 6,
    actions: ['stop web soft'],
    log: /^web: stop: retrying a stop that failed \(now on n2\)/,
    status: { web: 'stopping@4' },
  },
  {
    name: 'a vanished container does not complete a stop that failed (its volume may still be primary)',
    local: node(5, { web: on('n2', 2) }, { web: { ...lv('stopping', 1, 4), stopRetryAt: 7 } }),
    events: [{ kind: 'crashed', vserver: 'web', reason: 'container absent' }],
    now: 6,
    actions: [],
    status: { web: 'stopping@4' },
  },
  {
    name: 'a crash while stopping completes the stop',
    local: node(5, { web: on('n1', 1) }, { web: lv('stopping', 1, 4) }),
    events: [{ kind: 'crashed', vserver: 'web', reason: 'killed by the guard' }],
    now: 6,
    actions: [],
    status: { web: 'stopped@6' },
  },
];

for (const c of cases)
  test(`nodeStep: ${c.name}`, () => {
    const frozen = JSON.stringify(c.local);
    const r = summary(c.local, c.events ?? [], c.now);
    assert.equal(JSON.stringify(c.local), frozen, 'input not modified');
    assert.deepEqual(r.actions, c.actions);
    assert.deepEqual(r.status, c.status);
    if (c.fenced !== undefined) assert.equal(r.fenced, c.fenced);
    if (c.log)
      assert.ok(
        r.log.some((l) => c.log!.test(l)),
        `no log line matches ${c.log}:\n${r.log.join('\n')}`,
      );
  });

test('nodeStep is deterministic and says each decision once', () => {
  const local = node(5, { web: on('n1', 1) });
  const a = nodeStep(local, [], 6, timing);
  assert.deepEqual(nodeStep(local, [], 6, timing), a);
  // Nothing new happened: nothing more to say or do.
  const b = nodeStep(a.local, [], 7, timing);
  assert.deepEqual(b.actions, []);
  assert.deepEqual(b.log, []);
});

test('afterRestart: what it held, all stopped, no lease', () => {
  const l = afterRestart(
    node(5, { web: on('n1', 1) }, { web: lv('healthy', 1, 2) }, { fenced: true, fencedAt: 3 }),
    9,
  );
  assert.deepEqual(l.vservers, { web: lv('stopped', 1, 9) });
  assert.equal(l.leaseUntil, null);
  assert.equal(l.fenced, false);
});

/**
 * Simulated time: the node renews every second until the store is cut at 20, carries out its actions
 * (starts take 2 s, hard stops are immediate); it must have nothing running from leaseUntil - margin on.
 */
test('simulated time: a node that cannot renew stops everything before its lease can end', () => {
  let local = node(null, { web: on('n1', 1), db: on('n1', 1) });
  const running = new Set<string>();
  const starting = new Map<string, number>();
  let fencedAt = -1;
  for (let t = 1; t <= 40; t++) {
    const events: NodeEvent[] = [];
    if (t <= 20 || t >= 35) events.push({ kind: 'renewed', sentAt: t });
    for (const [v, at] of starting)
      if (t - at >= 2) {
        starting.delete(v);
        events.push({ kind: 'started', vserver: v, epoch: 1 }, { kind: 'health', vserver: v, healthy: true });
      }
    let r = nodeStep(local, events, t, timing);
    for (const a of r.actions) {
      if (a.kind === 'stop' && a.hard) {
        running.delete(a.vserver);
        starting.delete(a.vserver);
        r = nodeStep(r.local, [{ kind: 'stopped', vserver: a.vserver }], t, timing);
      } else if (a.kind === 'start') {
        running.add(a.vserver);
        starting.set(a.vserver, t);
      }
    }
    local = r.local;
    if (local.fenced && fencedAt < 0) fencedAt = t;
    if (local.leaseUntil !== null && t >= local.leaseUntil - timing.fenceMargin)
      assert.equal(running.size, 0, `t=${t}: ${[...running].join(', ')} running inside the fence margin`);
    if (t === 10) assert.deepEqual(r.reports.web?.status, 'healthy');
  }
  assert.equal(fencedAt, 28);
  // Renewed again from 35: it unfenced, but web and db, stopped at the same epoch, wait for the manager.
  assert.equal(local.fenced, false);
  assert.deepEqual(
    Object.values(local.vservers).map((x) => x.status),
    ['stopped', 'stopped'],
  );
  assert.equal(running.size, 0);
});
