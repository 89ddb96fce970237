/**
 * The membership mesh's shell: one UDP socket per local address (link i = addresses[i]) bound to the
 * mesh port, one unref'd timer that sends a heartbeat to every peer on every shared link and ticks the
 * trackers, and the receive path (decode -> pure step). Everything it decides is in `mesh.ts`; a
 * malformed or forged packet is counted and dropped, never thrown.
 */
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Clock, delayToGrid, monotonicClock, type TimerHandle } from '../../lib/clock.ts';
import { errnoCode, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { rateLimited } from '../../lib/log-limiter.ts';
import { type DecodeContext, decodeHeartbeat, encodeHeartbeat, type MeshKeys, meshKeys } from './codec.ts';
import type { LinkTiming } from './link.ts';
import {
  type MeshEvent,
  type MeshInput,
  type MeshSetup,
  type MeshState,
  meshStep,
  newMesh,
  ownView,
  sharedLinks,
} from './mesh.ts';
import { nextBootId } from './sequence.ts';
import { type MeshReport, meshReport } from './view.ts';

export interface MeshServiceOptions {
  cluster: string;
  secret: Buffer;
  setup: MeshSetup;
  port: number;
  timing: LinkTiming;
  /** Where the boot id is kept across restarts. */
  stateDir: string;
  log: Logger;
  onEvent(e: MeshEvent): void;
  /** Sends, ticks and round trips are timed on it: CLOCK_MONOTONIC by default (a simulated one in tests). */
  clock?: Clock;
  /**
   * Heartbeats go out at the multiples of the interval on this clock (`clock` by default): the agent
   * gives the wall clock, so every node sends at the same instants and what a node sends and what it
   * receives share its wake-ups (each costs an idle agent more than the work it does).
   */
  gridClock?: Clock;
}

const REBIND_MS = 5000;
const PACKET_BUFFER = 2048;

interface LinkSocket {
  address: string;
  socket: Socket | undefined;
  bound: boolean;
  problem: string;
  retryAt: number;
  ctx: DecodeContext;
}

export class MeshService {
  readonly o: MeshServiceOptions;
  readonly #keys: MeshKeys;
  readonly #boot: number;
  #state: MeshState;
  readonly #sockets: LinkSocket[];
  /** One send buffer and sequence counter per peer and link: nothing is allocated per packet but the MAC. */
  readonly #out = new Map<string, { buf: Buffer; seq: number }[]>();
  /** Monotonic (shared by every process of the boot: an earlier life's echo is older). */
  readonly #clock: Clock;
  readonly #grid: Clock;
  #timer: TimerHandle | undefined;
  #sent = 0;
  #sendErrors = 0;
  readonly #dropLog;
  readonly #onSent = (err: Error | null) => {
    if (err) this.#sendErrors++;
  };

  constructor(o: MeshServiceOptions) {
    this.o = o;
    this.#clock = o.clock ?? monotonicClock;
    this.#grid = o.gridClock ?? this.#clock;
    this.#keys = meshKeys(o.secret, o.cluster);
    this.#boot = this.#nextBoot();
    const now = this.#clock.now();
    this.#state = newMesh(o.setup, now);
    const known = new Set(o.setup.peers.map((p) => p.name));
    this.#sockets = o.setup.myAddresses.map((address, link) => ({
      address,
      socket: undefined,
      bound: false,
      problem: '',
      retryAt: 0,
      ctx: { keys: this.#keys, me: o.setup.me, link, known },
    }));
    for (const p of o.setup.peers)
      this.#out.set(
        p.name,
        Array.from({ length: sharedLinks(o.setup, p) }, () => ({ buf: Buffer.alloc(PACKET_BUFFER), seq: 0 })),
      );
    this.#dropLog = rateLimited(o.log, { max: 5 });
  }

  /** Later than every earlier boot of this node (kept in the state dir), see `nextBootId`. */
  #nextBoot(): number {
    const file = join(this.o.stateDir, 'mesh-boot');
    let previous: number | undefined;
    try {
      previous = Number(readFileSync(file, 'utf8').trim()) || undefined;
    } catch {}
    const boot = nextBootId(previous, Date.now());
    try {
      writeFileSync(file, `${boot}\n`);
    } catch (err) {
      this.o.log.warn({ event: 'mesh', err: errorMessage(err) }, 'mesh boot id not kept');
    }
    return boot;
  }

  start(): void {
    for (let i = 0; i < this.#sockets.length; i++) this.#bind(i);
    this.#schedule();
    this.o.log.info(
      { event: 'mesh', port: this.o.port, links: this.o.setup.myAddresses, boot: this.#boot },
      'membership mesh started',
    );
  }

  /** The next tick, on the grid (`gridClock`), until close; the timer alone does not keep the process running. */
  #schedule(): void {
    const ms = delayToGrid(this.#grid.now(), this.o.timing.intervalMs);
    this.#timer = this.#clock.setTimer(() => {
      this.#schedule();
      this.#tick();
    }, ms);
    this.#timer.unref?.();
  }

  close(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    for (const s of this.#sockets) {
      s.socket?.close();
      s.socket = undefined;
      s.bound = false;
    }
  }

  #bind(link: number): void {
    const ls = this.#sockets[link]!;
    // Peers are addressed by IP: no resolver round (dns.lookup and a nextTick) per packet sent.
    const socket = createSocket({ type: 'udp4', lookup: (address, _o, cb) => cb(null, address, 4) });
    ls.socket = socket;
    socket.on('error', (err) => {
      if (ls.bound) {
        this.#sendErrors++;
        return;
      }
      // Not bound (the address is missing, the port taken): tried again a little later.
      ls.problem = `link ${link}: cannot bind ${ls.address}:${this.o.port}: ${errnoCode(err) ?? errorMessage(err)}`;
      ls.retryAt = this.#clock.now() + REBIND_MS;
      ls.socket = undefined;
      socket.close();
      this.#dropLog.warn({ event: 'mesh' }, ls.problem);
    });
    socket.on('message', (msg, rinfo) => this.#receive(link, msg, rinfo.address));
    socket.bind({ address: ls.address, port: this.o.port, exclusive: true }, () => {
      ls.bound = true;
      ls.problem = '';
      socket.unref();
    });
  }

  #step(input: MeshInput, now: number): void {
    const r = meshStep(this.#state, input, now, this.o.timing);
    this.#state = r.state;
    for (const e of r.events) {
      try {
        this.o.onEvent(e);
      } catch (err) {
        this.o.log.error({ event: 'mesh', err: errorMessage(err) }, 'mesh event handler failed');
      }
    }
  }

  #receive(link: number, msg: Buffer, address: string): void {
    const now = this.#clock.now();
    const d = decodeHeartbeat(msg, this.#sockets[link]!.ctx);
    if (d.ok) {
      this.#step({ kind: 'heartbeat', hb: d.hb, from: address }, now);
      return;
    }
    const from = address;
    this.#dropLog.warn(
      { event: 'mesh', link, reason: d.reason, from: address },
      `mesh: packet dropped (${d.reason})`,
    );
    this.#step({ kind: 'drop', reason: d.reason, from }, now);
  }

  #tick(): void {
    const now = this.#clock.now();
    this.#step({ kind: 'tick' }, now);
    for (let i = 0; i < this.#sockets.length; i++) {
      const ls = this.#sockets[i]!;
      if (!ls.socket && now >= ls.retryAt) this.#bind(i);
    }
    const view = ownView(this.#state, now, this.o.timing);
    for (const peer of this.o.setup.peers) {
      const out = this.#out.get(peer.name)!;
      const tracked = this.#state.peers[peer.name]!;
      for (let link = 0; link < out.length; link++) {
        const ls = this.#sockets[link]!;
        if (!ls.bound || !ls.socket) continue;
        const o = out[link]!;
        const l = tracked.links[link]!;
        o.seq++;
        const bytes = encodeHeartbeat(
          {
            link,
            sender: this.o.setup.me,
            receiver: peer.name,
            boot: this.#boot,
            seq: o.seq,
            sentAt: now,
            echo: l.peerSentAt,
            hold: l.heardAt ? now - l.heardAt : 0,
            view,
          },
          this.#keys,
          o.buf,
        );
        ls.socket.send(bytes, this.o.port, peer.addresses[link]!, this.#onSent);
        this.#sent++;
      }
    }
  }

  report(): MeshReport {
    return meshReport(this.#state, this.#clock.now(), {
      node: this.o.setup.me,
      port: this.o.port,
      timing: this.o.timing,
      myAddresses: this.o.setup.myAddresses,
      peerAddresses: Object.fromEntries(this.o.setup.peers.map((p) => [p.name, p.addresses])),
      problems: this.#sockets.map((s) => s.problem).filter(Boolean),
      sent: this.#sent,
      sendErrors: this.#sendErrors,
    });
  }
}
