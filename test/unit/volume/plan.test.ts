import assert from 'node:assert/strict';
import { test } from 'node:test';
import { health, planDown, planUp, type VolumeObservation } from '../../../src/volume/plan.ts';

const down: VolumeObservation = { daemonAlive: false, fuseMounted: false, loops: [], fsMounts: [] };
const up: VolumeObservation = {
  daemonAlive: true,
  fuseMounted: true,
  loops: ['/dev/loop3'],
  fsMounts: [{ loop: '/dev/loop3', dir: '/srv/web' }],
};
const crashed: VolumeObservation = { ...up, daemonAlive: false };

test('health', () => {
  assert.equal(health(down).health, 'down');
  assert.equal(health(up).health, 'up');
  assert.equal(health(crashed).health, 'failed');
  assert.equal(health({ ...up, loops: [], fsMounts: [] }).health, 'partial');
});

test('up from nothing: daemon, loop, mkfs, mount', () => {
  assert.deepEqual(
    planUp(down, { mkfs: 'ext4', mountDir: '/srv/web' }).map((s) => s.kind),
    ['start-daemon', 'attach-loop', 'mkfs', 'mount-fs'],
  );
});

test('up is idempotent', () => {
  assert.deepEqual(planUp(up, { mountDir: '/srv/web' }), []);
});

test('up after a daemon crash tears down in order, then starts afresh', () => {
  assert.deepEqual(
    planUp(crashed, { mountDir: '/srv/web' }).map((s) => s.kind),
    ['unmount-fs', 'detach-loop', 'unmount-fuse', 'start-daemon', 'attach-loop', 'mount-fs'],
  );
});

test('down: filesystem, loop, FUSE, daemon; nothing when already down', () => {
  assert.deepEqual(
    planDown(up).map((s) => s.kind),
    ['unmount-fs', 'detach-loop', 'unmount-fuse', 'wait-daemon-exit'],
  );
  assert.deepEqual(planDown(down), []);
});
