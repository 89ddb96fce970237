import assert from 'node:assert/strict';
import { test } from 'node:test';
import { health, planDown, planSecondary, planUp, type VolumeObservation } from '../../../src/volume/plan.ts';

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

// Replicated volumes: the daemon outlives its FUSE mount, which exists only while primary.
const secondary: VolumeObservation = { ...down, daemonAlive: true, replicated: true, role: 'Secondary' };
const primary: VolumeObservation = { ...up, replicated: true, role: 'Primary' };
const crashedPrimary: VolumeObservation = { ...primary, daemonAlive: false, role: undefined };

test('replicated: a secondary without a device is up; a primary needs its FUSE device', () => {
  assert.equal(health(secondary).health, 'up');
  assert.match(health(secondary).reason, /secondary/);
  assert.equal(health({ ...secondary, loops: ['/dev/loop1'] }).health, 'partial');
  assert.equal(health(primary).health, 'up');
  assert.equal(health({ ...primary, fuseMounted: false, loops: [], fsMounts: [] }).health, 'partial');
  assert.equal(health(crashedPrimary).health, 'failed');
});

test('replicated up: only the daemon, unless asked to become primary', () => {
  const r = { ...down, replicated: true };
  assert.deepEqual(
    planUp(r, {}).map((s) => s.kind),
    ['start-daemon'],
  );
  assert.deepEqual(planUp(secondary, {}), []);
  assert.deepEqual(planUp(r, { primary: { epoch: 7 }, mkfs: 'ext4', mountDir: '/srv/db' }), [
    { kind: 'start-daemon' },
    { kind: 'promote', epoch: 7 },
    { kind: 'attach-loop' },
    { kind: 'mkfs', fstype: 'ext4' },
    { kind: 'mount-fs', dir: '/srv/db' },
  ]);
  assert.deepEqual(
    planUp(secondary, { primary: {} }).map((s) => s.kind),
    ['promote', 'attach-loop'],
  );
  assert.deepEqual(planUp(primary, { primary: {}, mountDir: '/srv/web' }), []);
});

test('replicated: a crashed primary is torn down in order and restarts as a secondary', () => {
  assert.deepEqual(
    planUp(crashedPrimary, {}).map((s) => s.kind),
    ['unmount-fs', 'detach-loop', 'unmount-fuse', 'start-daemon'],
  );
});

test('replicated down and secondary: release the device, then ask the daemon', () => {
  assert.deepEqual(
    planDown(primary).map((s) => s.kind),
    ['unmount-fs', 'detach-loop', 'stop-daemon', 'wait-daemon-exit'],
  );
  assert.deepEqual(
    planDown(secondary).map((s) => s.kind),
    ['stop-daemon', 'wait-daemon-exit'],
  );
  assert.deepEqual(
    planSecondary(primary).map((s) => s.kind),
    ['unmount-fs', 'detach-loop', 'demote'],
  );
  assert.deepEqual(planSecondary({ ...down, replicated: true }), []);
});
