import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { notifySettings, ServiceManager } from '../../../src/agent/service-manager.ts';

test('notifySettings: nothing without NOTIFY_SOCKET; the watchdog only when meant for this pid', () => {
  assert.equal(notifySettings({}, 10), null);
  assert.equal(notifySettings({ NOTIFY_SOCKET: '' }, 10), null);
  assert.deepEqual(notifySettings({ NOTIFY_SOCKET: '/run/n' }, 10), { socket: '/run/n', watchdogMs: null });
  const wd = { NOTIFY_SOCKET: '@n', WATCHDOG_USEC: '20000000' };
  assert.deepEqual(notifySettings(wd, 10), { socket: '@n', watchdogMs: 20_000 });
  assert.deepEqual(notifySettings({ ...wd, WATCHDOG_PID: '10' }, 10), { socket: '@n', watchdogMs: 20_000 });
  assert.deepEqual(notifySettings({ ...wd, WATCHDOG_PID: '11' }, 10), { socket: '@n', watchdogMs: null });
  assert.deepEqual(notifySettings({ ...wd, WATCHDOG_USEC: 'x' }, 10), { socket: '@n', watchdogMs: null });
});

test('fromEnvironment takes the variables out of the environment (children must not inherit them)', () => {
  const env: NodeJS.ProcessEnv = {
    NOTIFY_SOCKET: '/run/n',
    WATCHDOG_USEC: '1000000',
    WATCHDOG_PID: '1',
    A: 'b',
  };
  const sm = ServiceManager.fromEnvironment(env, 1);
  assert.deepEqual(sm.settings, { socket: '/run/n', watchdogMs: 1000 });
  assert.deepEqual(env, { A: 'b' });
});

function fake(watchdogMs: number | null) {
  const sent: string[][] = [];
  let t = 0;
  let release: (() => void) | undefined;
  let hold = false;
  const sm = new ServiceManager(
    { socket: '/x', watchdogMs },
    {
      now: () => t,
      send: (lines) => {
        sent.push(lines);
        return hold ? new Promise<void>((r) => (release = r)) : Promise.resolve();
      },
    },
  );
  return {
    sm,
    sent,
    at: (ms: number) => (t = ms),
    hold: () => (hold = true),
    release: async () => {
      hold = false;
      release?.();
      await new Promise((r) => setImmediate(r));
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('READY with its status; WATCHDOG=1 every half interval from the loop, status riding along', async () => {
  const f = fake(10_000);
  f.sm.ready('up');
  f.at(1000);
  f.sm.watchdog('running');
  f.at(4999);
  f.sm.watchdog();
  await tick();
  assert.deepEqual(f.sent, [['READY=1', 'STATUS=up']]);
  f.at(5000);
  f.sm.watchdog();
  f.at(6000);
  f.sm.watchdog('running');
  f.at(10_000);
  f.sm.watchdog('running');
  await tick();
  assert.deepEqual(f.sent.slice(1), [['WATCHDOG=1', 'STATUS=running'], ['WATCHDOG=1']]);
  f.at(10_001);
  f.sm.stopping('stopping: SIGTERM');
  await tick();
  assert.deepEqual(f.sent.slice(3), [['STOPPING=1', 'STATUS=stopping: SIGTERM']]);
});

test('one notification in flight: what comes meanwhile is merged into the next', async () => {
  const f = fake(1000);
  f.hold();
  f.sm.ready('up');
  f.at(600);
  f.sm.watchdog('a');
  f.at(1200);
  f.sm.watchdog('b');
  f.sm.stopping('bye');
  assert.deepEqual(f.sent, [['READY=1', 'STATUS=up']]);
  await f.release();
  assert.deepEqual(f.sent.slice(1), [['WATCHDOG=1', 'STATUS=bye', 'STOPPING=1']]);
});

test('without a watchdog a changed status goes out at most every 10 s; without a socket nothing at all', async () => {
  const f = fake(null);
  f.sm.ready('up');
  f.at(5000);
  f.sm.watchdog('x');
  f.at(10_000);
  f.sm.watchdog('y');
  f.at(30_000);
  f.sm.watchdog('y');
  await tick();
  assert.deepEqual(f.sent, [['READY=1', 'STATUS=up'], ['STATUS=y']]);

  let calls = 0;
  const none = new ServiceManager(null, { send: async () => void calls++ });
  none.ready('up');
  none.watchdog('x');
  none.stopping('bye');
  await tick();
  assert.equal(calls, 0);
});

test('errors are reported once per reason: no perl at all, no socket to send to', async (t) => {
  const errors: string[] = [];
  const path = process.env.PATH;
  t.after(() => {
    process.env.PATH = path;
  });
  process.env.PATH = '/nonexistent';
  const noPerl = new ServiceManager({ socket: '/x', watchdogMs: 2 }, { onError: (m) => errors.push(m) });
  noPerl.ready('up');
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 20));
    noPerl.watchdog();
  }
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(errors, ['perl not found: cannot notify systemd']);

  process.env.PATH = path;
  errors.length = 0;
  const dir = mkdtempSync(join(tmpdir(), 'cvserver-notify-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const nobody = new ServiceManager(
    { socket: join(dir, 'absent.sock'), watchdogMs: 2 },
    { onError: (m) => errors.push(m) },
  );
  nobody.ready('up');
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 20));
    nobody.watchdog();
  }
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(errors, [`sending to ${join(dir, 'absent.sock')}: No such file or directory`]);
});

/** A stand-in for systemd's notify socket (perl: Node has no AF_UNIX datagram sockets): a line per datagram. */
const RECEIVER = String.raw`
use strict; use Socket; $| = 1;
socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die "socket: $!\n";
bind($s, pack_sockaddr_un($ARGV[0])) or die "bind: $!\n";
print "listening\n";
while (defined(recv($s, my $buf, 4096, 0))) { $buf =~ s/\\/\\\\/g; $buf =~ s/\n/\\n/g; print "$buf\n"; }
`;

interface Datagram {
  msg: string;
  at: number;
}

async function receiver(path: string): Promise<{ child: ChildProcess; got: Datagram[] }> {
  const child = spawn('perl', ['-e', RECEIVER, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const got: Datagram[] = [];
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the perl receiver exited with ${code}`)));
    lines.on('line', (line) => {
      if (line === 'listening') return resolve();
      const msg = line.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      got.push({ msg, at: performance.now() });
    });
  });
  return { child, got };
}

/** This process's children that run `comm`. */
function children(comm: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .flatMap((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const [name, rest] = [
          stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
          stat.slice(stat.lastIndexOf(')') + 2),
        ];
        return name === comm && Number(rest.split(' ')[1]) === process.pid ? [Number(pid)] : [];
      } catch {
        return []; // gone meanwhile
      }
    });
}

test('through the relay to a real datagram socket: READY, then WATCHDOG while the loop runs, none once it stops', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvserver-notify-'));
  const socket = join(dir, 'notify.sock');
  const { child, got } = await receiver(socket);
  t.after(() => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const before = children('perl');
  const sm = ServiceManager.fromEnvironment(
    { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000', WATCHDOG_PID: String(process.pid) },
    process.pid,
  );
  sm.ready('agent up');
  // The "main loop": a turn every 50 ms, as the agent's calls watchdog() every turn.
  const loop = setInterval(() => sm.watchdog('running'), 50);
  await new Promise((r) => setTimeout(r, 1500));
  // One relay for every message, not a process per message.
  assert.equal(children('perl').filter((p) => !before.includes(p)).length, 1);
  clearInterval(loop);
  const stoppedAt = performance.now();
  await new Promise((r) => setTimeout(r, 1000));

  assert.ok(got.length > 0, 'nothing arrived');
  assert.equal(got[0]!.msg, 'READY=1\nSTATUS=agent up');
  const pings = got.filter((d) => d.msg.includes('WATCHDOG=1'));
  // 1.5 s at one ping per 200 ms (half of 400 ms): about 7, never more than 8 (the loop asks every
  // 50 ms: the rate is the notifier's). Arrival times are not checked: a loaded machine bunches them.
  assert.ok(pings.length >= 2 && pings.length <= 8, `${pings.length} pings`);
  assert.equal(pings[0]!.msg, 'WATCHDOG=1\nSTATUS=running');
  assert.deepEqual(
    got.filter((d) => d.at > stoppedAt + 500),
    [],
    'notifications went on after the loop stopped',
  );
  sm.stopping('stopping: SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.at(-1)!.msg, 'STOPPING=1\nSTATUS=stopping: SIGTERM');
});
