import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import type { HealthCheck, VserverDefinition } from './definition.ts';

export interface ProbeResult {
  ok: boolean;
  detail: string;
}

/** Where a tcp/http check connects by default: the vserver's first address. */
export function probeHost(check: HealthCheck, def: VserverDefinition): string {
  if (check.type !== 'exec' && check.host) return check.host;
  return def.network?.addresses[0]?.split('/')[0] ?? '127.0.0.1';
}

export function probeTcp(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (r: ProbeResult) => {
      sock.destroy();
      resolve(r);
    };
    sock.setTimeout(timeoutMs, () =>
      done({ ok: false, detail: `tcp ${host}:${port}: timeout after ${timeoutMs}ms` }),
    );
    sock.on('connect', () => done({ ok: true, detail: `tcp ${host}:${port}: connected` }));
    sock.on('error', (e) => done({ ok: false, detail: `tcp ${host}:${port}: ${e.message}` }));
  });
}

export async function probeHttp(
  url: string,
  expectStatus: number,
  bodyMatch: string | undefined,
  timeoutMs: number,
): Promise<ProbeResult> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const body = await res.text();
    if (res.status !== expectStatus)
      return { ok: false, detail: `http ${url}: status ${res.status}, expected ${expectStatus}` };
    if (bodyMatch !== undefined && !new RegExp(bodyMatch).test(body)) {
      return { ok: false, detail: `http ${url}: body does not match /${bodyMatch}/` };
    }
    return { ok: true, detail: `http ${url}: ${res.status}` };
  } catch (e) {
    const err = e as Error & { cause?: Error };
    return { ok: false, detail: `http ${url}: ${err.cause?.message ?? err.message}` };
  }
}

/** Runs a command with a deadline; exit code 0 is success. */
export function probeCommand(
  cmd: string,
  args: string[],
  timeoutMs: number,
  what: string,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ ok: false, detail: `${what}: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const tail = out.trim().split('\n').slice(-1)[0] ?? '';
      if (code === 0) resolve({ ok: true, detail: `${what}: exit 0`, ...(tail ? {} : {}) });
      else
        resolve({
          ok: false,
          detail: `${what}: ${signal ? `timeout after ${timeoutMs}ms` : `exit ${code}`}${tail ? ` (${tail})` : ''}`,
        });
    });
  });
}
