import assert from 'node:assert/strict';
import { test } from 'node:test';
import { summarizeHealth, summarizeVolume } from '../../../src/agent/resources/observation.ts';
import {
  replicaPlan,
  replicaRoleOf,
  replicationDiffers,
  tiebreakerOf,
} from '../../../src/agent/resources/replica-plan.ts';
import { planStaleCleanup } from '../../../src/agent/resources/stale-plan.ts';
import type { VolumeStatus } from '../../../src/volume/lifecycle.ts';

const cluster = {
  nodes: [
    { name: 'n1', role: 'full' as const, addresses: ['10.0.0.1', '10.1.0.1'] },
    { name: 'n2', role: 'full' as const, addresses: ['10.0.0.2'] },
    { name: 'n3', role: 'full' as const, addresses: ['fd00::3'] },
    { name: 'w', role: 'witness' as const, addresses: ['10.0.0.9'] },
  ],
};
const vol = (replicas: string[]) => ({
  name: 'web',
  volume: { size: 64 << 20, filesystem: 'ext4' as const, replicas, port: 7801 },
});

test('two replicas and a witness: the witness is the tiebreaker, on every replica and on itself', () => {
  const spec = vol(['n1', 'n2']);
  assert.equal(tiebreakerOf(spec, cluster), 'w');
  assert.equal(replicaRoleOf(spec, cluster, 'n1'), 'data');
  assert.equal(replicaRoleOf(spec, cluster, 'w'), 'tiebreaker');
  assert.equal(replicaRoleOf(spec, cluster, 'n3'), undefined);
  const n1 = replicaPlan(spec, cluster, 'n1', '/s');
  assert.equal(n1.role, 'data');
  assert.deepEqual(n1.replication, {
    node: 'n1',
    listen: '10.0.0.1:7801',
    secretFile: '/s',
    peers: [
      { node: 'n2', address: '10.0.0.2:7801', tiebreaker: false },
      { node: 'w', address: '10.0.0.9:7801', tiebreaker: true },
    ],
    quorum: 'suspend-io',
    afterSplitBrain: 'disconnect',
    durableWrites: true,
    resyncRate: 0,
  });
  const w = replicaPlan(spec, cluster, 'w', '/s');
  assert.equal(w.role, 'tiebreaker');
  assert.equal(w.replication.listen, '10.0.0.9:7801');
  assert.deepEqual(
    w.replication.peers.map((p) => [p.node, p.tiebreaker]),
    [
      ['n1', false],
      ['n2', false],
    ],
  );
});

test('three replicas: no tiebreaker; IPv6 addresses in brackets', () => {
  const spec = vol(['n1', 'n2', 'n3']);
  assert.equal(tiebreakerOf(spec, cluster), undefined);
  const p = replicaPlan(spec, cluster, 'n2', '/s');
  assert.deepEqual(
    p.replication.peers.map((x) => x.address),
    ['10.0.0.1:7801', '[fd00::3]:7801'],
  );
  assert.throws(() => replicaPlan(spec, cluster, 'w', '/s'), /holds no replica/);
});

test('two replicas without a witness: no tiebreaker', () => {
  assert.equal(
    tiebreakerOf(vol(['n1', 'n2']), { nodes: cluster.nodes.filter((n) => n.role === 'full') }),
    undefined,
  );
});

test('replicationDiffers: only what the plan decides, peers in any order', () => {
  const p = replicaPlan(vol(['n1', 'n2']), cluster, 'n1', '/s').replication;
  assert.equal(replicationDiffers({ ...p, peers: [...p.peers].reverse(), resyncRate: '50M' }, p), false);
  assert.equal(replicationDiffers({ ...p, listen: '10.0.0.1:7802' }, p), true);
  assert.equal(replicationDiffers({ ...p, peers: p.peers.slice(0, 1) }, p), true);
});

test('summarizeHealth: none without checks or when not running; unhealthy wins; all healthy; else starting', () => {
  assert.equal(summarizeHealth('running', [], {}), 'none');
  assert.equal(summarizeHealth('stopped', ['0:tcp:80'], { '0:tcp:80': 'healthy' }), 'none');
  assert.equal(summarizeHealth('running', ['0:tcp:80', '1:exec'], { '0:tcp:80': 'healthy' }), 'starting');
  assert.equal(
    summarizeHealth('running', ['0:tcp:80', '1:exec'], { '0:tcp:80': 'healthy', '1:exec': 'healthy' }),
    'healthy',
  );
  assert.equal(summarizeHealth('running', ['0:tcp:80', '1:exec'], { '1:exec': 'unhealthy' }), 'unhealthy');
});

const status = (over: Partial<VolumeStatus>): VolumeStatus => ({
  name: 'web',
  uuid: 'u',
  size: 1,
  health: 'up',
  reason: '',
  diskState: 'UpToDate',
  epoch: 3,
  pid: 42,
  loop: null,
  mounts: [],
  daemon: null,
  replication: null,
  ...over,
});

test('summarizeVolume: role from the daemon, failed from health, none when the daemon is down', () => {
  assert.deepEqual(summarizeVolume(undefined).role, 'none');
  const primary = summarizeVolume(
    status({
      daemon: { role: 'Primary' } as VolumeStatus['daemon'],
    }),
  );
  assert.deepEqual(primary, {
    up: true,
    role: 'primary',
    diskState: 'UpToDate',
    upToDate: true,
    epoch: 3,
    failed: false,
  });
  const failed = summarizeVolume(status({ pid: null, health: 'failed', diskState: 'Outdated' }));
  assert.equal(failed.role, 'none');
  assert.equal(failed.up, false);
  assert.equal(failed.failed, true);
  assert.equal(failed.upToDate, false);
});

test('planStaleCleanup: only this state dir, only what hangs on a dead daemon, in teardown order', () => {
  const sd = '/var/lib/cvs-a';
  const actions = planStaleCleanup({
    stateDir: sd,
    mounts: [
      { source: '/dev/loop3', dir: `${sd}/mnt/web`, fstype: 'ext4' },
      { source: 'web', dir: `${sd}/volumes/web/fuse`, fstype: 'fuse.cvserver' },
      { source: '/dev/loop4', dir: `${sd}/mnt/db`, fstype: 'ext4' },
      { source: 'db', dir: `${sd}/volumes/db/fuse`, fstype: 'fuse.cvserver' },
      // Another state dir's volume (a second node on the same machine): untouched.
      { source: '/dev/loop5', dir: '/var/lib/cvs-b/mnt/web', fstype: 'ext4' },
      { source: 'web', dir: '/var/lib/cvs-b/volumes/web/fuse', fstype: 'fuse.cvserver' },
      // A loop whose file is gone, still mounted under our mnt/.
      { source: '/dev/loop6', dir: `${sd}/mnt/old`, fstype: 'ext4' },
    ],
    loops: [
      { name: '/dev/loop3', backFile: `${sd}/volumes/web/fuse/device` },
      { name: '/dev/loop4', backFile: `${sd}/volumes/db/fuse/device` },
      { name: '/dev/loop5', backFile: '/var/lib/cvs-b/volumes/web/fuse/device' },
      { name: '/dev/loop6', backFile: `${sd}/volumes/old/fuse/device (deleted)` },
      { name: '/dev/loop7', backFile: '/home/x.img' },
    ],
    volumes: [
      { name: 'web', daemonAlive: false },
      { name: 'db', daemonAlive: true },
    ],
    containers: [
      { name: 'web', status: 'running' },
      { name: 'db', status: 'running' },
      { name: 'gone', status: 'stopped' },
    ],
  });
  assert.deepEqual(
    actions.map((a) => `${a.kind} ${'name' in a ? a.name : 'dir' in a ? a.dir : a.loop}`),
    [
      'kill-container web',
      'delete-container gone',
      `unmount ${sd}/mnt/web`,
      `unmount ${sd}/mnt/old`,
      'detach-loop /dev/loop3',
      'detach-loop /dev/loop6',
      `unmount-fuse ${sd}/volumes/web/fuse`,
    ],
  );
});

test('planStaleCleanup: nothing stale, nothing to do', () => {
  assert.deepEqual(
    planStaleCleanup({
      stateDir: '/s',
      mounts: [],
      loops: [],
      volumes: [{ name: 'v', daemonAlive: true }],
      containers: [],
    }),
    [],
  );
});
