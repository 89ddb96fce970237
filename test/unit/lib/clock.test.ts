import assert from 'node:assert/strict';
import { test } from 'node:test';
import { delayToGrid, ManualClock, monotonicClock, monotonicMs } from '../../../src/lib/clock.ts';

test('manual clock fires timers in time order, ties in creation order, and skips cancelled ones', () => {
  const clock = new ManualClock(1000);
  const fired: string[] = [];
  clock.setTimer(() => fired.push('b'), 20);
  clock.setTimer(() => fired.push('a'), 10);
  clock.setTimer(() => fired.push('c'), 20);
  clock.setTimer(() => fired.push('x'), 15).cancel();
  assert.equal(clock.nextDue(), 1010);
  clock.advance(20);
  assert.deepEqual(fired, ['a', 'b', 'c']);
  assert.equal(clock.now(), 1020);
  assert.equal(clock.runNext(), false);
});

test('manual clock: a timer set while firing runs in the same advance when due, and sleep resolves', async () => {
  const clock = new ManualClock();
  const fired: number[] = [];
  clock.setTimer(() => {
    fired.push(clock.now());
    clock.setTimer(() => fired.push(clock.now()), 5);
  }, 5);
  clock.advance(12);
  assert.deepEqual(fired, [5, 10]);
  assert.equal(clock.now(), 12);
  let woke = false;
  const sleeping = clock.sleep(3).then(() => {
    woke = true;
  });
  clock.advance(3);
  await sleeping;
  assert.equal(woke, true);
});

test('the monotonic clock counts milliseconds (with their fractions) that never go back', async () => {
  const a = monotonicMs();
  const b = monotonicClock.now();
  assert.ok(Number.isFinite(a) && b >= a);
  await monotonicClock.sleep(5);
  assert.ok(monotonicClock.now() - b >= 4);
});

test('delayToGrid: to the next multiple of the period; one less than a quarter period away is skipped', () => {
  const table: [now: number, period: number, delay: number][] = [
    [1000, 330, 320], // 1000 = 3 * 330 + 10
    [990, 330, 330], // on a multiple: the next one
    [1002, 330, 318], // fired 12 ms late: back on the grid
    [989, 330, 331], // fired 1 ms early: not again at once (1 ms), the multiple after
    [1230, 330, 90], // a quarter period or more away: kept
    [1240, 330, 410], // 80 ms: less than a quarter period, the multiple after
    [-10, 330, 10 + 330], // before the epoch (a simulated clock): same rule
  ];
  for (const [now, period, delay] of table)
    assert.equal(delayToGrid(now, period), delay, `${now} % ${period}`);
});
