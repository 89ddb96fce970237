import assert from 'node:assert/strict';
import { test } from 'node:test';
import { busyboxDefinition, makeLab, waitFor } from './vserver-helpers.ts';

interface Event {
  time: string;
  type: string;
  reason: string;
}

const IDLE = 'while true; do sleep 1; done';

test('a busybox vserver: isolation, limits, capabilities, http health check and restart, stop timeout', async (t) => {
  const lab = makeLab(t);
  const web = lab.writeDefinition(
    'web',
    busyboxDefinition(
      lab,
      'web',
      2,
      [
        'hostname: web-vps',
        'limits: {memory: 32M, pids: 30, cpu: 0.5}',
        'stop: {timeout: 1500ms}',
        'health_checks:',
        '  - {type: http, port: 80, path: /index.html, body_match: hello, interval: 500ms, timeout: 1s, retries: 3, start_period: 5s}',
        'restart: {max_restarts: 3, window: 10m}',
      ].join('\n'),
      `echo hello > /var/www/index.html; httpd -p 80 -h /var/www; trap '' TERM; ${IDLE}`,
    ),
  );
  const created = lab.cli('vserver', 'create', web, '--template', 'busybox');
  assert.equal(created.code, 0, created.err);
  const started = lab.cli('vserver', 'start', 'web', '--json');
  assert.equal(started.code, 0, started.err);
  assert.equal((JSON.parse(started.out) as { state: string }).state, 'running');
  const events = () => JSON.parse(lab.cli('vserver', 'logs', 'web', '--json').out) as Event[];
  const exec = (...cmd: string[]) => lab.cli('vserver', 'exec', 'web', ...cmd);

  await t.test('own processes and hostname; host processes invisible and unsignalable', () => {
    const ps = exec('ps', '-o', 'pid,comm');
    assert.equal(ps.code, 0, ps.err);
    const pids = ps.out
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => Number(l.trim().split(/\s+/)[0]));
    assert.ok(pids.includes(1) && pids.length < 8, ps.out);
    assert.equal(exec('hostname').out.trim(), 'web-vps');
    // This test's own PID (on the host) does not exist inside, and cannot be signalled.
    assert.notEqual(exec('kill', '-0', String(process.pid)).code, 0);
    assert.notEqual(exec('kill', '-9', String(process.pid)).code, 0);
  });

  await t.test('capabilities it lacks: mount and module loading fail', () => {
    const mount = exec('mount', '-t', 'tmpfs', 'none', '/mnt');
    assert.notEqual(mount.code, 0);
    assert.equal(exec('sh', '-c', 'echo x > /tmp/m.ko').code, 0);
    const insmod = exec('insmod', '/tmp/m.ko');
    assert.notEqual(insmod.code, 0);
    assert.match(insmod.err + insmod.out, /not permitted/i);
    assert.notEqual(exec('sh', '-c', 'echo 1 > /proc/sys/kernel/sysrq').code, 0);
  });

  await t.test('pids limit', () => {
    const r = exec('sh', '-c', 'for i in $(seq 60); do sleep 2 & done');
    assert.notEqual(r.code, 0);
    assert.match(r.err + r.out, /fork|resource temporarily unavailable/i);
    exec('sh', '-c', 'killall sleep; true');
  });

  await t.test('memory limit: an allocating process is OOM-killed and the event reported', async () => {
    const r = exec('sh', '-c', 'x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done');
    assert.equal(r.code, 137, `expected SIGKILL, got ${r.code} ${r.err}`);
    const ev = await waitFor('an oom-kill event', 5000, () => events().find((e) => e.type === 'oom-kill'));
    assert.match(ev.reason, /memory limit/);
  });

  await t.test(
    'httpd inside is reachable; killing it fails the check and the restart policy brings it back',
    async () => {
      // From the host side of the bridge (the lab's network namespace), as a client would.
      const get = () => lab.httpGet(`http://${lab.subnet}.2/`);
      await waitFor('http 200 from the vserver', 5000, () => (get().includes('hello') ? true : undefined));
      await waitFor('healthy', 5000, () => events().find((e) => e.type === 'health-healthy'));
      const killedAt = Date.now();
      assert.equal(exec('killall', 'httpd').code, 0);
      const unhealthy = await waitFor('unhealthy event', 10_000, () =>
        events().find((e) => e.type === 'health-unhealthy'),
      );
      // interval × retries = 1.5 s, plus one probe timeout and generous slack for a loaded machine:
      // this catches a check that never fires or waits far too long, not milliseconds.
      assert.ok(
        Date.parse(unhealthy.time) - killedAt < 500 * 3 + 1000 + 5000,
        `unhealthy after ${Date.parse(unhealthy.time) - killedAt}ms`,
      );
      await waitFor('restart event', 10_000, () => events().find((e) => e.type === 'restarting'));
      await waitFor('http again after the restart', 15_000, () =>
        get().includes('hello') ? true : undefined,
      );
      const st = JSON.parse(lab.cli('vserver', 'status', 'web', '--json').out) as {
        state: string;
        restarts: number;
      };
      assert.equal(st.state, 'running');
      assert.equal(st.restarts, 1);
    },
  );

  await t.test('stop of a vserver that ignores SIGTERM ends within the stop timeout', () => {
    const began = Date.now();
    const r = lab.cli('vserver', 'stop', 'web', '--json');
    const took = Date.now() - began;
    assert.equal(r.code, 0, r.err);
    assert.equal((JSON.parse(r.out) as { result: string }).result, 'killed');
    assert.ok(took < 1500 + 2000, `stop took ${took}ms`);
    assert.equal(
      (JSON.parse(lab.cli('vserver', 'status', 'web', '--json').out) as { state: string }).state,
      'absent',
    );
  });
});

test('a vserver keeps running after the command exits; status is recovered from crun; exec returns the exit code', (t) => {
  const lab = makeLab(t);
  const f = lab.writeDefinition(
    'idle',
    busyboxDefinition(lab, 'idle', 3, 'stop: {timeout: 1s}', `trap 'exit 0' TERM; ${IDLE} & wait`),
  );
  assert.equal(lab.cli('vserver', 'create', f, '--template', 'busybox').code, 0);
  assert.equal(lab.cli('vserver', 'start', 'idle').code, 0);
  const list = JSON.parse(lab.cli('vserver', 'list', '--json').out) as {
    name: string;
    state: string;
    pid: number;
  }[];
  assert.equal(list[0]?.state, 'running');
  assert.equal(lab.cli('vserver', 'exec', 'idle', 'sh', '-c', 'exit 7').code, 7);
  assert.equal(lab.inNetns('ping', '-c', '1', '-W', '2', `${lab.subnet}.3`).code, 0);
  const stop = JSON.parse(lab.cli('vserver', 'stop', 'idle', '--json').out) as { result: string };
  assert.equal(stop.result, 'stopped', 'a vserver that handles SIGTERM stops without being killed');
});
