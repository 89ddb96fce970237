/**
 * The agent's side of systemd's notification protocol (sd_notify): READY=1 once the agent is up,
 * WATCHDOG=1 from its main loop every half WatchdogSec (a hung loop stops them, and systemd kills and
 * restarts the agent), STATUS= lines for `systemctl status`, STOPPING=1 on the way out.
 *
 * Node has no AF_UNIX datagram sockets. A small perl relay (perl-base is Essential in Debian) started
 * at the first notification sends them: the agent writes a line to its stdin, it sends one datagram.
 * Measured here: ~0.01 ms of the agent's CPU per message, one message every 10 s; running
 * systemd-notify(1) per message instead cost ~33 ms of CPU each (0.33 % of a core at one per 10 s,
 * on an agent whose idle budget is 2 %). The relay's datagrams carry its own pid, a process in the
 * agent's unit, hence NotifyAccess=all in the unit.
 *
 * Without NOTIFY_SOCKET nothing is sent and nothing is spawned.
 *
 * Importing this module takes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID out of the environment
 * (as sd_notify's unset_environment does): everything the agent starts inherits its environment, and
 * crun would relay a container init's notifications to the agent's unit (and wait for its READY=1).
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { isActive, type NodeLocal } from '../cluster/node.ts';
import { errnoCode, errorMessage } from '../lib/errors.ts';

/** Without a watchdog, how often a changed status may be sent. */
const STATUS_PERIOD_MS = 10_000;

export interface NotifySettings {
  /** Where systemd listens (a path, or `@name` in the abstract namespace). */
  socket: string;
  /** WatchdogSec in ms, when the watchdog is on and meant for this process; else null. */
  watchdogMs: number | null;
}

/** What the environment asks of `pid`; null when it was not started by a service manager that listens. */
export function notifySettings(env: NodeJS.ProcessEnv, pid: number): NotifySettings | null {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return null;
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === pid;
  return { socket, watchdogMs: Number.isFinite(usec) && usec > 0 && forUs ? usec / 1000 : null };
}

/** Sends one notification (VAR=value lines, one datagram); rejects with the reason it could not. */
export type NotifySender = (lines: string[]) => Promise<void>;

/**
 * The relay: reads one notification per line (its VAR=value lines separated by tabs) and sends each as
 * one datagram. perl-base is Essential in Debian, and its Socket module does AF_UNIX datagrams. It ends
 * at end of input, so it never outlives the agent (a pipe closes even on SIGKILL).
 */
const RELAY = String.raw`
use strict; use Socket;
my $path = shift; $path =~ s/^@/\0/;
my $addr = pack_sockaddr_un($path);
socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die "socket: $!\n";
while (my $msg = <STDIN>) {
  chomp $msg; $msg =~ tr/\t/\n/;
  send($s, $msg, 0, $addr) or print STDERR "sending to $path: $!\n";
}
`;

/**
 * The default sender: a perl relay started at the first notification and kept (started again if it
 * died). A datagram from it is credited to the relay's pid, a process of the agent's unit: the unit
 * says NotifyAccess=all. Errors the relay meets go to `onError`.
 */
export function relaySender(socket: string, onError: (message: string) => void): NotifySender {
  let relay: ChildProcessByStdio<Writable, null, Readable> | undefined;
  let missing: Error | undefined;
  const start = () => {
    const child = spawn('perl', ['-e', RELAY, socket], {
      stdio: ['pipe', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    const gone = () => {
      if (relay === child) relay = undefined;
    };
    child.on('error', (err) => {
      gone();
      // No perl at all: said once, never tried again.
      if (errnoCode(err) === 'ENOENT') missing = new Error('perl not found: cannot notify systemd');
      else onError(`the notification relay (perl): ${errorMessage(err)}`);
    });
    child.on('exit', gone);
    child.stdin.on('error', () => {}); // a relay gone shows on 'exit'; the next message starts another
    createInterface({ input: child.stderr }).on('line', (line) => onError(line));
    // The relay never keeps the agent (or a test) alive by itself.
    // (Piped stdio is a net.Socket, which the stream types do not say.)
    child.unref();
    (child.stdin as Socket).unref();
    (child.stderr as Socket).unref();
    return child;
  };
  return (lines) =>
    new Promise((resolve, reject) => {
      if (missing) return reject(missing);
      relay ??= start();
      const line = `${lines.map((l) => l.replace(/[\t\n]/g, ' ')).join('\t')}\n`;
      relay.stdin.write(line, (err) => (err ? reject(missing ?? err) : resolve()));
    });
}

export interface ServiceManagerOptions {
  send?: NotifySender;
  /** Milliseconds on a monotonic clock. */
  now?: () => number;
  /** A notification that failed (each different reason once). */
  onError?: (message: string) => void;
}

/**
 * Notifications to the service manager, at most one in flight: what comes meanwhile is merged into
 * the next (one datagram may carry several lines), so a stuck relay never piles up messages.
 */
export class ServiceManager {
  readonly settings: NotifySettings | null;
  #send: NotifySender;
  #now: () => number;
  #onError: (message: string) => void;
  #pending = new Map<string, string>();
  #inFlight = false;
  #lastPing = 0;
  #status = '';
  #sentStatus = '';
  #lastError = '';

  constructor(settings: NotifySettings | null, o: ServiceManagerOptions = {}) {
    this.settings = settings;
    this.#onError = o.onError ?? ((m) => process.stderr.write(`cvserver: systemd notification: ${m}\n`));
    this.#now = o.now ?? (() => performance.now());
    this.#send = o.send ?? (settings ? relaySender(settings.socket, (m) => this.#report(m)) : async () => {});
  }

  /** From the process's environment, which it then scrubs (see the module's comment). */
  static fromEnvironment(env: NodeJS.ProcessEnv = process.env, pid = process.pid): ServiceManager {
    const settings = notifySettings(env, pid);
    delete env.NOTIFY_SOCKET;
    delete env.WATCHDOG_USEC;
    delete env.WATCHDOG_PID;
    return new ServiceManager(settings);
  }

  /** The agent is up (its API socket listens): systemd's start job completes, the watchdog starts. */
  ready(status: string): void {
    if (!this.settings) return;
    this.#lastPing = this.#now();
    this.#status = this.#sentStatus = status;
    this.#post({ READY: '1', STATUS: status });
  }

  /**
   * Called every turn of the main loop: WATCHDOG=1 once half WatchdogSec has passed since the last
   * one. A status given here rides along with the next ping (no message of its own); without a
   * watchdog, a changed status goes out at most every STATUS_PERIOD_MS.
   */
  watchdog(status?: string): void {
    if (!this.settings) return;
    if (status !== undefined) this.#status = status;
    const { watchdogMs } = this.settings;
    if (this.#now() - this.#lastPing < (watchdogMs === null ? STATUS_PERIOD_MS : watchdogMs / 2)) return;
    const vars: Record<string, string> = {};
    if (watchdogMs !== null) vars.WATCHDOG = '1';
    if (this.#status !== this.#sentStatus) vars.STATUS = this.#sentStatus = this.#status;
    if (Object.keys(vars).length === 0) return;
    this.#lastPing = this.#now();
    this.#post(vars);
  }

  /** The agent is stopping (its own decision or a signal). */
  stopping(status: string): void {
    if (!this.settings) return;
    this.#sentStatus = this.#status = status;
    this.#post({ STOPPING: '1', STATUS: status });
  }

  /** Each different problem once (a failing relay would otherwise say it every 10 s). */
  #report(message: string): void {
    if (message !== this.#lastError) this.#onError(message);
    this.#lastError = message;
  }

  #post(vars: Record<string, string>): void {
    for (const [k, v] of Object.entries(vars)) this.#pending.set(k, v.replace(/\n/g, ' '));
    if (!this.#inFlight) this.#flush();
  }

  #flush(): void {
    if (this.#pending.size === 0) return;
    const lines = [...this.#pending].map(([k, v]) => `${k}=${v}`);
    this.#pending.clear();
    this.#inFlight = true;
    this.#send(lines)
      .catch((err: unknown) => this.#report(errorMessage(err)))
      .finally(() => {
        this.#inFlight = false;
        this.#flush();
      });
  }
}

/** The line `systemctl status` shows for a running agent. */
export function agentStatusLine(
  local: Pick<NodeLocal, 'fenced' | 'leaseUntil' | 'vservers'>,
  lastError: string,
): string {
  const here = Object.entries(local.vservers)
    .filter(([, v]) => isActive(v.status))
    .map(([name]) => name)
    .sort();
  return [
    local.fenced ? 'FENCED' : local.leaseUntil === null ? 'no lease' : 'lease held',
    `vservers here: ${here.join(', ') || 'none'}`,
    ...(lastError ? [`last problem: ${lastError}`] : []),
  ].join('; ');
}

/** The agent process's own: READY, WATCHDOG and STOPPING come from src/agent/agent.ts. */
export const serviceManager = ServiceManager.fromEnvironment();
