import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Clock, systemClock } from '../lib/clock.ts';
import { errorMessage, UserError } from '../lib/errors.ts';
import { type ContainerState, crunExecArgs, crunRuntime, quickStatus } from './crun.ts';
import type { HealthCheck, VserverDefinition } from './definition.ts';
import { applyResult, type HealthState, initialHealth, nextProbeAt } from './health-state.ts';
import { type ProbeResult, probeCommand, probeHost, probeHttp, probeTcp } from './probe.ts';
import { decideRestart, pruneHistory } from './restart-policy.ts';
import {
  cgroupsPath,
  crunRoot,
  readDefinition,
  readRuntime,
  recordEvent,
  rotateConsole,
  updateRuntime,
} from './store.ts';

const PROBE_MAIN = fileURLToPath(new URL('./probe-main.ts', import.meta.url));
const TICK_MS = 200;
/** How long a supervisor started beside its container waits for the container to run. */
const CONTAINER_WAIT_MS = 10_000;

export function checkLabel(check: HealthCheck, i: number): string {
  return `${i}:${check.type}${check.type === 'exec' ? '' : `:${check.port}`}`;
}

/** Runs one check. tcp/http probes run inside the bridge's network namespace when it has one. */
export function runProbe(def: VserverDefinition, check: HealthCheck): Promise<ProbeResult> {
  if (check.type === 'exec') {
    return probeCommand(
      'crun',
      crunExecArgs(crunRoot(), def.name, check.command, false),
      check.timeout,
      `exec ${check.command.join(' ')}`,
    );
  }
  const host = probeHost(check, def);
  const url = check.type === 'http' ? `http://${host}:${check.port}${check.path}` : '';
  if (!def.network?.netns) {
    return check.type === 'tcp'
      ? probeTcp(host, check.port, check.timeout)
      : probeHttp(url, check.expect_status, check.body_match, check.timeout);
  }
  const spec = JSON.stringify({
    kind: check.type,
    host,
    port: check.port,
    url,
    expect: check.type === 'http' ? check.expect_status : 0,
    body: check.type === 'http' ? check.body_match : undefined,
    timeout: check.timeout,
  });
  return new Promise((resolve) => {
    void import('node:child_process').then(({ execFile }) => {
      execFile(
        'nsenter',
        [
          `--net=/run/netns/${def.network?.netns}`,
          process.execPath,
          '--disable-warning=ExperimentalWarning',
          PROBE_MAIN,
          spec,
        ],
        { timeout: check.timeout + 5000 },
        (err, stdout) => {
          if (err && !stdout)
            return resolve({ ok: false, detail: `${check.type} probe: ${err.message.split('\n')[0]}` });
          try {
            resolve(JSON.parse(stdout) as ProbeResult);
          } catch {
            resolve({ ok: false, detail: `${check.type} probe: bad output` });
          }
        },
      );
    });
  });
}

/** The supervisor asks every tick, and waits for the start in 20 ms steps: crun is spawned only when needed. */
function quickState(name: string): Promise<ContainerState['status']> {
  return quickStatus(crunRuntime(crunRoot()), crunRoot(), name);
}

function oomKills(name: string): number | undefined {
  const f = `/sys/fs/cgroup/memory${cgroupsPath(name)}/memory.oom_control`;
  if (!existsSync(f)) return undefined;
  const m = /oom_kill (\d+)/.exec(readFileSync(f, 'utf8'));
  return m ? Number(m[1]) : undefined;
}

/**
 * The per-vserver supervisor: watches the container, runs the health checks on their intervals,
 * reports OOM kills, rotates the console log, and applies the restart policy. Every transition is an event.
 */
export async function supervise(name: string, clock: Clock = systemClock): Promise<void> {
  const def = readDefinition(name);
  if (!def) throw new UserError(`no vserver named "${name}"`);
  // Only a restart needs the container's start and stop (manager.ts and all it loads): loaded then,
  // so the supervisor is ready for the first health check sooner.
  const containers = () => import('./manager.ts');
  const policy = {
    policy: def.restart.policy,
    maxRestarts: def.restart.max_restarts,
    windowMs: def.restart.window,
  };
  let health: HealthState[] = def.health_checks.map(() => initialHealth(clock.now()));
  let nextRun: number[] = def.health_checks.map(() => clock.now());
  let lastOom = oomKills(name) ?? 0;
  let stopping = false;
  process.on('SIGTERM', () => {
    stopping = true;
  });

  const restart = async (why: string): Promise<boolean> => {
    const now = clock.now();
    const rec = readRuntime(name);
    const decision = decideRestart(policy, rec.restarts, now);
    if (!decision.restart) {
      recordEvent(name, 'restart-refused', `${why}; ${decision.reason}`);
      updateRuntime(name, (r) => ({ ...r, desired: 'stopped', supervisorPid: undefined }));
      await (await containers()).stopContainer(def, `${why}; not restarted`);
      return false;
    }
    recordEvent(name, 'restarting', `${why}; ${decision.reason}`);
    updateRuntime(name, (r) => ({ ...r, restarts: [...pruneHistory(policy, r.restarts, now), now] }));
    const { startContainer, stopContainer } = await containers();
    await stopContainer(def, `restart: ${why}`);
    await startContainer(def, `restart: ${why}`);
    health = def.health_checks.map(() => initialHealth(clock.now()));
    nextRun = def.health_checks.map(() => clock.now());
    lastOom = 0;
    return true;
  };

  // Started beside the container (see startVserver): wait for it to run before watching it.
  const waitUntil = clock.now() + CONTAINER_WAIT_MS;
  while (!stopping && clock.now() < waitUntil && readRuntime(name).desired === 'running') {
    const st = await quickState(name);
    if (st === 'running' || st === 'stopped') break;
    await clock.sleep(20);
  }
  health = def.health_checks.map(() => initialHealth(clock.now()));
  nextRun = def.health_checks.map(() => clock.now());

  while (!stopping) {
    if (readRuntime(name).desired !== 'running') break;
    const status = await quickState(name);
    if (status === 'stopped' || status === 'absent') {
      const kills = oomKills(name);
      if (kills !== undefined && kills > lastOom)
        recordEvent(name, 'oom-kill', `memory limit reached: ${kills - lastOom} process(es) killed`);
      recordEvent(name, 'exited', `container ${status === 'absent' ? 'disappeared' : 'exited'}`);
      if (!(await restart('the container exited'))) break;
      continue;
    }
    const kills = oomKills(name);
    if (kills !== undefined && kills > lastOom) {
      recordEvent(
        name,
        'oom-kill',
        `memory limit ${def.limits.memory} bytes reached: ${kills - lastOom} process(es) killed by the kernel`,
      );
      updateRuntime(name, (r) => ({ ...r, oomKills: (r.oomKills ?? 0) + (kills - lastOom) }));
      lastOom = kills;
    }
    rotateConsole(name);
    const due = def.health_checks
      .map((c, i) => ({ c, i }))
      .filter(({ i }) => (nextRun[i] ?? 0) <= clock.now());
    const results = await Promise.all(
      due.map(async ({ c, i }) => ({ i, r: await runProbe(def, c), at: clock.now() })),
    );
    let unhealthy: string | undefined;
    for (const { i, r, at } of results) {
      const check = def.health_checks[i]!;
      const out = applyResult(
        health[i]!,
        { retries: check.retries, startPeriodMs: check.start_period },
        { ok: r.ok, at, detail: r.detail },
      );
      health[i] = out.state;
      nextRun[i] = nextProbeAt(out.state, at, check);
      if (out.transition) {
        const label = checkLabel(check, i);
        recordEvent(name, `health-${out.transition.to}`, `check ${label}: ${out.transition.reason}`);
        updateRuntime(name, (rec) => ({
          ...rec,
          health: { ...rec.health, [label]: out.transition?.to ?? '' },
        }));
        if (out.transition.to === 'unhealthy') unhealthy = `check ${label} unhealthy`;
      }
    }
    if (unhealthy) {
      if (readRuntime(name).desired !== 'running' || stopping) break;
      if (!(await restart(unhealthy))) break;
      continue;
    }
    await clock.sleep(TICK_MS);
  }
}

export async function superviseMain(name: string): Promise<void> {
  try {
    await supervise(name);
  } catch (e) {
    recordEvent(name, 'supervisor-error', errorMessage(e));
    throw e;
  }
}
