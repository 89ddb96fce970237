/**
 * What `cvserver status` and `cvserver links` show of the mesh (pure): the matrix of who sees whom on
 * which link (this node's links, live; every other node's, as it last said in a heartbeat), and the
 * detail of this node's links.
 */
import { type DropReason, type LinkStateName, parseView } from './codec.ts';
import { type LinkStats, type LinkTiming, linkStats } from './link.ts';
import type { MeshState, Reachability } from './mesh.ts';

export interface MatrixCell {
  from: string;
  to: string;
  link: number;
  /** `stale`: `from` said nothing for longer than dead_after (its view is not known now). */
  state: LinkStateName | 'stale';
  rttMs: number | null;
  lossPct: number | null;
}

export interface LinkDetail extends LinkStats {
  peer: string;
  link: number;
  local: string;
  remote: string;
  state: LinkStateName;
  /** Seconds since the state last changed. */
  forS: number;
  lastHeardAgoMs: number | null;
  received: number;
  lost: number;
}

export interface MeshReport {
  node: string;
  port: number;
  intervalMs: number;
  deadAfterMs: number;
  /** Why the mesh is not running, or a link's socket is not bound ('' when fine). */
  problems: string[];
  peers: { name: string; reachable: Reachability; forS: number }[];
  links: LinkDetail[];
  matrix: MatrixCell[];
  sent: number;
  sendErrors: number;
  dropped: Record<DropReason, number>;
  /** `node`: the node whose address `from` is (a node of another release, say), or null. */
  lastDrop: { reason: DropReason; from: string; node: string | null; agoMs: number } | null;
}

export interface MeshReportInput {
  node: string;
  port: number;
  timing: LinkTiming;
  myAddresses: string[];
  peerAddresses: Record<string, string[]>;
  problems: string[];
  sent: number;
  sendErrors: number;
}

const ms3 = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);
const pct2 = (x: number | null) => (x === null ? null : Math.round(x * 100) / 100);

export function meshReport(s: MeshState, now: number, o: MeshReportInput): MeshReport {
  const links: LinkDetail[] = [];
  const matrix: MatrixCell[] = [];
  for (const [peer, p] of Object.entries(s.peers))
    p.links.forEach((l, link) => {
      const st = linkStats(l, now, o.timing);
      links.push({
        peer,
        link,
        local: o.myAddresses[link] ?? '',
        remote: o.peerAddresses[peer]?.[link] ?? '',
        state: l.state,
        forS: Math.round(now - l.since) / 1000,
        lastHeardAgoMs: l.lastHeard === null ? null : Math.round(now - l.lastHeard),
        rttLastMs: ms3(st.rttLastMs),
        rttAvgMs: ms3(st.rttAvgMs),
        rttMaxMs: ms3(st.rttMaxMs),
        lossPct: pct2(st.lossPct),
        receivedLastMinute: st.receivedLastMinute,
        lostLastMinute: st.lostLastMinute,
        received: l.received,
        lost: l.lost,
      });
      matrix.push({
        from: o.node,
        to: peer,
        link,
        state: l.state,
        rttMs: ms3(st.rttAvgMs),
        lossPct: pct2(st.lossPct),
      });
    });
  for (const [peer, p] of Object.entries(s.peers)) {
    const fresh = p.view !== null && now - p.view.at <= o.timing.deadAfterMs;
    for (const e of p.view ? parseView(p.view.bytes) : [])
      matrix.push({
        from: peer,
        to: e.node,
        link: e.link,
        state: fresh ? e.state : 'stale',
        rttMs: fresh ? e.rttMs : null,
        lossPct: fresh ? e.lossPct : null,
      });
    // A peer never heard from: its row is unknown, one cell per link it shares with each node.
    if (!p.view)
      for (const other of [o.node, ...Object.keys(s.peers)].filter((n) => n !== peer)) {
        const n = Math.min(o.peerAddresses[peer]?.length ?? 0, o.peerAddresses[other]?.length ?? 0);
        const count = other === o.node ? p.links.length : n;
        for (let link = 0; link < count; link++)
          matrix.push({ from: peer, to: other, link, state: 'stale', rttMs: null, lossPct: null });
      }
  }
  return {
    node: o.node,
    port: o.port,
    intervalMs: o.timing.intervalMs,
    deadAfterMs: o.timing.deadAfterMs,
    problems: o.problems,
    peers: Object.entries(s.peers).map(([name, p]) => ({
      name,
      reachable: p.reachable,
      forS: Math.round(now - p.since) / 1000,
    })),
    links,
    matrix,
    sent: o.sent,
    sendErrors: o.sendErrors,
    dropped: { ...s.dropped },
    lastDrop: s.lastDrop
      ? {
          reason: s.lastDrop.reason,
          from: s.lastDrop.from,
          node: nodeAt(o.peerAddresses, s.lastDrop.from),
          agoMs: Math.round(now - s.lastDrop.at),
        }
      : null,
  };
}

/** The node one of whose addresses is `address`, if any. */
function nodeAt(peerAddresses: Record<string, string[]>, address: string): string | null {
  for (const [node, addresses] of Object.entries(peerAddresses)) if (addresses.includes(address)) return node;
  return null;
}

/** One cell of the matrix as text: "up 0.31ms 0%", "DOWN", "?" (stale). */
export function cellText(c: Pick<MatrixCell, 'state' | 'rttMs' | 'lossPct'> | undefined): string {
  if (!c) return '-';
  if (c.state === 'stale') return '?';
  if (c.state === 'unknown') return 'unknown';
  const rtt = c.rttMs === null ? '' : ` ${c.rttMs < 10 ? c.rttMs.toFixed(2) : Math.round(c.rttMs)}ms`;
  const loss =
    c.lossPct === null
      ? ''
      : ` ${c.lossPct < 1 && c.lossPct > 0 ? c.lossPct.toFixed(1) : Math.round(c.lossPct)}%`;
  return `${c.state === 'up' ? 'up' : 'DOWN'}${rtt}${loss}`;
}

/** The matrix as rows: one per (from, to) pair, one column per link. */
export function matrixRows(cells: MatrixCell[], links: number): string[][] {
  const pairs = new Map<string, MatrixCell[]>();
  for (const c of cells) {
    const k = `${c.from}\0${c.to}`;
    pairs.set(k, [...(pairs.get(k) ?? []), c]);
  }
  return [...pairs.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([, cs]) => [
      cs[0]!.from,
      cs[0]!.to,
      ...Array.from({ length: links }, (_, i) => cellText(cs.find((c) => c.link === i))),
    ]);
}
