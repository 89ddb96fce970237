/**
 * One link to one peer, as a pure step (like the node's and the manager's): heartbeats and ticks in,
 * the new state and at most one change (up or down, with its reason) out. Times are ms on the
 * caller's monotonic clock; tests run it in simulated time.
 *
 * Up: a new heartbeat arrived. Down: none for `deadAfterMs`. Round-trip time comes from the echo in
 * the peer's packets; loss from the gaps in its sequence numbers (and, while it is silent, from the
 * packets that should have come), both over the last minute in 5-second buckets.
 */
import type { LinkStateName } from './codec.ts';
import { checkSequence } from './sequence.ts';

export interface LinkTiming {
  intervalMs: number;
  deadAfterMs: number;
}

export const BUCKET_MS = 5000;
export const BUCKETS = 12;
export const WINDOW_MS = BUCKET_MS * BUCKETS;

/**
 * Per 5-second bucket of the last minute, one row of `BUCKETS` per field in one array (copied whole
 * by a step: one allocation per packet). `ID` holds which bucket a slot holds.
 */
export type Buckets = Float64Array;
const ID = 0;
const RECEIVED = 1;
const LOST = 2;
const RTT_SUM = 3;
const RTT_COUNT = 4;
const RTT_MAX = 5;
const FIELDS = 6;
const at = (field: number, slot: number) => field * BUCKETS + slot;

export interface LinkState {
  /** When tracking began: every packet this process sent on the link is later (checks echoes). */
  createdAt: number;
  state: LinkStateName;
  /** When `state` last changed (at creation: when tracking began). */
  since: number;
  lastHeard: number | null;
  /** The last accepted packet's boot and sequence number (0: none). */
  boot: number;
  seq: number;
  /** The peer's send time in its last packet and when it arrived: echoed back for its RTT. */
  peerSentAt: number;
  heardAt: number;
  rttLast: number | null;
  /** Lifetime totals. */
  received: number;
  lost: number;
  buckets: Buckets;
}

export type LinkInput =
  | { kind: 'heartbeat'; boot: number; seq: number; sentAt: number; echo: number; hold: number }
  | { kind: 'tick' };

export interface LinkChange {
  state: 'up' | 'down';
  reason: string;
}

export interface LinkStepResult {
  state: LinkState;
  change: LinkChange | null;
  /** The heartbeat was not new (a replay or reordered): dropped, nothing changed. */
  replay: boolean;
}

export interface LinkStats {
  rttLastMs: number | null;
  rttAvgMs: number | null;
  rttMaxMs: number | null;
  lossPct: number | null;
  receivedLastMinute: number;
  lostLastMinute: number;
}

export function newLink(now: number): LinkState {
  return {
    createdAt: now,
    state: 'unknown',
    since: now,
    lastHeard: null,
    boot: 0,
    seq: 0,
    peerSentAt: 0,
    heardAt: 0,
    rttLast: null,
    received: 0,
    lost: 0,
    buckets: new Float64Array(FIELDS * BUCKETS).fill(-1, 0, BUCKETS),
  };
}

const bucketOf = (t: number) => Math.floor(t / BUCKET_MS);

/** The slot of bucket `id`, emptied first if it held an older bucket. */
function slot(b: Buckets, id: number): number {
  const i = id % BUCKETS;
  if (b[at(ID, i)] !== id) {
    for (let f = 1; f < FIELDS; f++) b[at(f, i)] = 0;
    b[at(ID, i)] = id;
  }
  return i;
}

/** `lost` packets that should have come between `from` and `to`, spread over the buckets in the window. */
function spreadLoss(b: Buckets, lost: number, from: number, to: number): void {
  const span = Math.max(1, to - from);
  const first = Math.max(bucketOf(from), bucketOf(to) - BUCKETS + 1);
  for (let id = first; id <= bucketOf(to); id++) {
    const overlap = Math.min(to, (id + 1) * BUCKET_MS) - Math.max(from, id * BUCKET_MS);
    if (overlap > 0) b[at(LOST, slot(b, id))]! += (lost * overlap) / span;
  }
}

const fmtS = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export function linkStep(s: LinkState, input: LinkInput, now: number, t: LinkTiming): LinkStepResult {
  if (input.kind === 'tick') {
    const quietSince = s.lastHeard ?? s.since;
    if (s.state === 'down' || now - quietSince < t.deadAfterMs)
      return { state: s, change: null, replay: false };
    const reason =
      s.lastHeard === null
        ? `no heartbeat since tracking began ${fmtS(now - s.since)} ago`
        : `no heartbeat for ${Math.round(now - s.lastHeard)} ms (down after ${t.deadAfterMs} ms)`;
    return { state: { ...s, state: 'down', since: now }, change: { state: 'down', reason }, replay: false };
  }

  const verdict = checkSequence(s, input.boot, input.seq);
  if (!verdict.fresh) return { state: s, change: null, replay: true };
  const b = s.buckets.slice();
  if (verdict.gap && s.lastHeard !== null) spreadLoss(b, verdict.gap, s.lastHeard, now);
  const i = slot(b, bucketOf(now));
  b[at(RECEIVED, i)]! += 1;
  // The echo is our own send time: one of this process's (a peer may still echo an earlier life's).
  let rtt: number | null = null;
  if (input.echo > 0 && input.echo >= s.createdAt && input.echo <= now) {
    rtt = Math.max(0, now - input.echo - Math.max(0, input.hold));
    b[at(RTT_SUM, i)]! += rtt;
    b[at(RTT_COUNT, i)]! += 1;
    b[at(RTT_MAX, i)] = Math.max(b[at(RTT_MAX, i)]!, rtt);
  }
  const next: LinkState = {
    ...s,
    lastHeard: now,
    boot: input.boot,
    seq: input.seq,
    peerSentAt: input.sentAt,
    heardAt: now,
    rttLast: rtt ?? s.rttLast,
    received: s.received + 1,
    lost: s.lost + (verdict.gap ?? 0),
    buckets: b,
  };
  if (s.state === 'up') return { state: next, change: null, replay: false };
  const reason =
    s.state === 'down'
      ? `heartbeats again after ${fmtS(now - s.since)} down`
      : `first heartbeat after ${fmtS(now - s.since)}`;
  return { state: { ...next, state: 'up', since: now }, change: { state: 'up', reason }, replay: false };
}

/** RTT and loss over the last minute, as of `now` (a silent link counts the packets it should have had). */
export function linkStats(s: LinkState, now: number, t: LinkTiming): LinkStats {
  const b = s.buckets;
  const oldest = bucketOf(now) - BUCKETS + 1;
  let received = 0;
  let lost = 0;
  let rttSum = 0;
  let rttCount = 0;
  let rttMax = 0;
  for (let i = 0; i < BUCKETS; i++) {
    if (b[at(ID, i)]! < oldest) continue;
    received += b[at(RECEIVED, i)]!;
    lost += b[at(LOST, i)]!;
    rttSum += b[at(RTT_SUM, i)]!;
    rttCount += b[at(RTT_COUNT, i)]!;
    rttMax = Math.max(rttMax, b[at(RTT_MAX, i)]!);
  }
  // Silent for more than one and a half intervals: the packets that should have come count as lost.
  const from = Math.max(s.lastHeard ?? s.since, oldest * BUCKET_MS);
  const silent = now - from;
  if (silent > 1.5 * t.intervalMs) lost += Math.floor(silent / t.intervalMs);
  const total = received + lost;
  return {
    rttLastMs: s.rttLast,
    rttAvgMs: rttCount ? rttSum / rttCount : null,
    rttMaxMs: rttCount ? rttMax : null,
    lossPct: total ? (100 * lost) / total : null,
    receivedLastMinute: received,
    lostLastMinute: Math.round(lost),
  };
}
