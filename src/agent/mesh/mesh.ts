/**
 * The whole mesh as one node sees it (pure): a link tracker per peer and link, whether each peer is
 * reachable on any link, what each peer last said about its own links (its view, for the matrix), and
 * the packets dropped by reason. `meshStep(state, input, now, timing)` -> `{ state, events }`; the
 * shell (`service.ts`) feeds it packets, drops and timer ticks.
 */
import { DROP_REASONS, type DropReason, type ReceivedHeartbeat, type ViewEntry } from './codec.ts';
import { type LinkState, type LinkTiming, linkStats, linkStep, newLink } from './link.ts';

export interface MeshPeerSpec {
  name: string;
  addresses: string[];
}

export interface MeshSetup {
  me: string;
  myAddresses: string[];
  peers: MeshPeerSpec[];
}

export type Reachability = 'unknown' | 'yes' | 'no';

export interface PeerState {
  /** Index = link: the links both nodes have an address on. */
  links: LinkState[];
  reachable: Reachability;
  since: number;
  /** The peer's own view of its links, from its last packet (as received: see `parseView`). */
  view: { at: number; bytes: Buffer } | null;
}

export interface MeshState {
  startedAt: number;
  peers: Record<string, PeerState>;
  dropped: Record<DropReason, number>;
  lastDrop: { reason: DropReason; from: string; at: number } | null;
}

export type MeshInput =
  | { kind: 'heartbeat'; hb: ReceivedHeartbeat; from: string }
  | { kind: 'drop'; reason: DropReason; from: string }
  | { kind: 'tick' };

export type MeshEvent =
  | { kind: 'link'; peer: string; link: number; state: 'up' | 'down'; reason: string }
  | { kind: 'node'; peer: string; reachable: boolean; reason: string };

export interface MeshStepResult {
  state: MeshState;
  events: MeshEvent[];
}

/** Links shared with a peer: link i exists when both nodes have an i-th address. */
export function sharedLinks(setup: MeshSetup, peer: MeshPeerSpec): number {
  return Math.min(setup.myAddresses.length, peer.addresses.length);
}

export function newMesh(setup: MeshSetup, now: number): MeshState {
  const peers: Record<string, PeerState> = {};
  for (const p of setup.peers)
    peers[p.name] = {
      links: Array.from({ length: sharedLinks(setup, p) }, () => newLink(now)),
      reachable: 'unknown',
      since: now,
      view: null,
    };
  const dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  return { startedAt: now, peers, dropped, lastDrop: null };
}

function drop(s: MeshState, reason: DropReason, from: string, now: number): MeshState {
  return {
    ...s,
    dropped: { ...s.dropped, [reason]: s.dropped[reason] + 1 },
    lastDrop: { reason, from, at: now },
  };
}

/** After a link change: the node is reachable on some link, or on none (an event either way, once). */
function reachability(name: string, p: PeerState, now: number, events: MeshEvent[]): PeerState {
  const up = p.links.some((l) => l.state === 'up');
  const allDown = p.links.length > 0 && p.links.every((l) => l.state === 'down');
  const next: Reachability = up ? 'yes' : allDown ? 'no' : p.reachable;
  if (next === p.reachable) return p;
  // A peer not heard since this node started is not news (nodes start one after another; its links'
  // own events say it): only a peer that was reachable becomes an event when it is no longer.
  if (next === 'no' && p.reachable === 'yes') {
    const silent = p.links
      .map((l, i) =>
        l.lastHeard === null
          ? `link ${i} never heard`
          : `link ${i} silent for ${Math.round(now - l.lastHeard)} ms`,
      )
      .join(', ');
    events.push({
      kind: 'node',
      peer: name,
      reachable: false,
      reason: `unreachable on all links (${silent})`,
    });
  } else if (p.reachable === 'no') {
    const on = p.links.flatMap((l, i) => (l.state === 'up' ? [i] : [])).join(', ');
    events.push({
      kind: 'node',
      peer: name,
      reachable: true,
      reason: `reachable again on link ${on} after ${((now - p.since) / 1000).toFixed(1)} s`,
    });
  }
  return { ...p, reachable: next, since: now };
}

export function meshStep(s: MeshState, input: MeshInput, now: number, t: LinkTiming): MeshStepResult {
  const events: MeshEvent[] = [];
  if (input.kind === 'drop') return { state: drop(s, input.reason, input.from, now), events };

  if (input.kind === 'heartbeat') {
    const { hb } = input;
    const p = s.peers[hb.sender];
    const link = p?.links[hb.link];
    // The codec accepts only known nodes and this socket's link; a link the peer has and we lack is not ours.
    if (!p || !link) return { state: drop(s, 'misdirected', input.from, now), events };
    const r = linkStep(link, { kind: 'heartbeat', ...hb }, now, t);
    if (r.replay) return { state: drop(s, 'replay', input.from, now), events };
    const links = [...p.links];
    links[hb.link] = r.state;
    // The view rarely changes: the bytes kept are copied only when it does.
    const bytes = p.view?.bytes.equals(hb.view) ? p.view.bytes : Buffer.from(hb.view);
    let peer: PeerState = { ...p, links, view: { at: now, bytes } };
    if (r.change) {
      events.push({ kind: 'link', peer: hb.sender, link: hb.link, ...r.change });
      peer = reachability(hb.sender, peer, now, events);
    }
    return { state: { ...s, peers: { ...s.peers, [hb.sender]: peer } }, events };
  }

  let peers = s.peers;
  for (const [name, p] of Object.entries(s.peers)) {
    let links: LinkState[] | undefined;
    p.links.forEach((l, i) => {
      const r = linkStep(l, { kind: 'tick' }, now, t);
      if (!r.change) return;
      links ??= [...p.links];
      links[i] = r.state;
      events.push({ kind: 'link', peer: name, link: i, ...r.change });
    });
    if (!links) continue;
    if (peers === s.peers) peers = { ...s.peers };
    peers[name] = reachability(name, { ...p, links }, now, events);
  }
  return { state: peers === s.peers ? s : { ...s, peers }, events };
}

/** This node's view of its own links, as it sends it to every peer. */
export function ownView(s: MeshState, now: number, t: LinkTiming): ViewEntry[] {
  const out: ViewEntry[] = [];
  for (const [node, p] of Object.entries(s.peers))
    p.links.forEach((l, link) => {
      const st = linkStats(l, now, t);
      out.push({ node, link, state: l.state, rttMs: st.rttAvgMs, lossPct: st.lossPct });
    });
  return out;
}

/** What an event says in the cluster's log. `leaseAlive`: the peer's lease is still valid in the store. */
export function describeMeshEvent(e: MeshEvent, leaseAlive: boolean | undefined): string {
  if (e.kind === 'link') return `link ${e.link} to ${e.peer} ${e.state}: ${e.reason}`;
  if (e.reachable) return `${e.peer} ${e.reason}`;
  const lease =
    leaseAlive === undefined
      ? ''
      : leaseAlive
        ? ' while its lease is valid (it may still run vservers: a network problem, not a dead node)'
        : ' (its lease has ended)';
  return `${e.peer} ${e.reason}${lease}`;
}
