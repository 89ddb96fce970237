/**
 * The mesh's shell reads time only through its injected clock: on a simulated one it sends nothing
 * and decides nothing until the simulation moves time, however long the real wait.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { MeshEvent } from '../../../../src/agent/mesh/mesh.ts';
import { MeshService } from '../../../../src/agent/mesh/service.ts';
import { type Clock, ManualClock } from '../../../../src/lib/clock.ts';
import { createLogger } from '../../../../src/lib/log.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('heartbeats and link decisions follow the injected clock, not the real one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-mesh-clock-'));
  const clock = new ManualClock(1_000_000);
  const events: MeshEvent[] = [];
  const service = new MeshService({
    cluster: 'h14a',
    secret: Buffer.alloc(32, 7),
    // A peer on another loopback address where nobody answers.
    setup: { me: 'a', myAddresses: ['127.0.0.1'], peers: [{ name: 'b', addresses: ['127.0.0.2'] }] },
    port: 20_000 + (process.pid % 20_000),
    timing: { intervalMs: 100, deadAfterMs: 500 },
    stateDir: dir,
    log: createLogger('mesh-clock-test'),
    onEvent: (e) => events.push(e),
    clock,
  });
  t.after(() => {
    service.close();
    rmSync(dir, { recursive: true, force: true });
  });
  service.start();
  await sleep(300); // the socket binds; three intervals of real time pass, and nothing is sent
  assert.deepEqual(service.report().problems, []);
  assert.equal(service.report().sent, 0);
  clock.advance(100);
  assert.equal(service.report().sent, 1);
  clock.advance(300);
  assert.equal(service.report().sent, 4);
  assert.equal(events.length, 0, 'b not yet silent for dead_after');
  clock.advance(600);
  assert.equal(service.report().sent, 10);
  // b silent for more than dead_after of simulated time: the mesh says so.
  assert.deepEqual(
    events.map((e) => e.kind === 'link' && `${e.peer} link ${e.link} ${e.state}`),
    ['b link 0 down'],
  );
});

test('heartbeats go out on the multiples of the interval of the grid clock', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-mesh-grid-'));
  const clock = new ManualClock(1_000_000);
  // The grid clock (only read) is 30 ms past a multiple of the interval when the mesh starts.
  const grid: Clock = {
    now: () => clock.now() + 5_030,
    setTimer: (fn, ms) => clock.setTimer(fn, ms),
    sleep: (ms) => clock.sleep(ms),
  };
  const service = new MeshService({
    cluster: 'h14g',
    secret: Buffer.alloc(32, 7),
    setup: { me: 'a', myAddresses: ['127.0.0.1'], peers: [{ name: 'b', addresses: ['127.0.0.2'] }] },
    port: 20_001 + (process.pid % 20_000),
    timing: { intervalMs: 100, deadAfterMs: 500 },
    stateDir: dir,
    log: createLogger('mesh-grid-test'),
    onEvent: () => {},
    clock,
    gridClock: grid,
  });
  t.after(() => {
    service.close();
    rmSync(dir, { recursive: true, force: true });
  });
  service.start();
  await sleep(100); // the socket binds
  clock.advance(69);
  assert.equal(service.report().sent, 0);
  clock.advance(1); // 70 ms after the start: on the grid's multiple
  assert.equal(service.report().sent, 1);
  clock.advance(99);
  assert.equal(service.report().sent, 1);
  clock.advance(1);
  assert.equal(service.report().sent, 2);
});
