/**
 * What a primary does when a peer's first STATE arrives (pure: the device gathers the facts, applies
 * the answer). Beside generation.ts (which side holds newer data) and role.ts (who may write).
 */
import type { ByteRange } from './bitmap.ts';
import {
  type AfterSplitBrainPolicy,
  decideSync,
  type Generation,
  type GenerationView,
  holdsGeneration,
  NO_ID,
  relate,
  resolveSplitBrain,
  type SplitBrainSide,
  type SyncDecision,
} from './generation.ts';
import { type AfterNone, afterNoneDecision } from './peer-report.ts';
import type { PeerState } from './protocol.ts';
import { type ActivitySource, reconcileMarks } from './reconciliation.ts';
import type { QuorumPolicy } from './role.ts';

export interface HandshakeFacts {
  /** This node's role now. */
  primary: boolean;
  size: number;
  /** The peer is configured as a diskless tiebreaker. */
  tiebreaker: boolean;
  quorum: QuorumPolicy;
  afterSplitBrain: AfterSplitBrainPolicy;
  /** This replica's generation and disk state. */
  local: GenerationView;
  /** This node and the epoch of its promotion (a peer's activity ranges of this term are its own). */
  self: ActivitySource;
  /** Its side of a split-brain: blocks it wrote alone (the peer's dirty extents), when it became primary. */
  localSide: SplitBrainSide;
  /** Bytes marked out of sync for this peer, and how many of them were marked before this promotion. */
  outOfSyncBytes: number;
  markedBeforePromotion: number;
  /** The operator chose this node as the survivor of a split-brain with this peer. */
  forcedSurvivor: boolean;
  peer: PeerState;
}

export type HandshakeAction =
  /** Not ours to decide (a secondary, a tiebreaker, a diskless peer): only quorum counts it. */
  | { kind: 'observe' }
  /** The peer is primary too: drop the connection and retry with backoff (usually transient). */
  | { kind: 'retry'; reason: string }
  /** Stop connecting until started again, in this connection state. */
  | { kind: 'park'; state: 'Refused' | 'SplitBrain' | 'Unrelated'; reason: string }
  /** In sync: nothing travels. */
  | { kind: 'none'; reason: string }
  /**
   * Resync from here: the bitmap's dirty extents (`full`: every extent), `mark` added first (an
   * old primary's activity-log extents), `afterNone` when the generations agree but bits are set.
   */
  | { kind: 'resync'; full: boolean; mark: ByteRange[]; reason: string; afterNone?: AfterNone }
  /**
   * The peer's side of a split-brain is discarded: its diverging blocks saved, then resynced from
   * here. `automatic`: the rules show its side holds no acknowledged write (else a policy or an
   * operator chose), and an interrupted discard is retried at the next connection.
   */
  | { kind: 'discard'; reason: string; automatic: boolean };

/** The action, with the generation comparison it came from (`decision` in the handshake's log line). */
export type HandshakeDecision = HandshakeAction & { sync?: SyncDecision['kind'] };

export function decideHandshake(f: HandshakeFacts): HandshakeDecision {
  const a = decide(f);
  if (a.kind === 'observe' || a.kind === 'retry') return a;
  return { ...a, sync: syncKind(f, a) };
}

/** What the generation comparison said, as the log has always named it. */
function syncKind(f: HandshakeFacts, a: HandshakeAction): SyncDecision['kind'] {
  if (a.kind === 'resync') return a.afterNone ? 'none' : a.full ? 'full' : 'bitmap';
  if (a.kind === 'none') return 'none';
  return decideSync(f.local, {
    generation: f.peer.generation,
    diskState: f.peer.diskState,
    crashedPrimary: f.peer.crashedPrimary,
  }).kind;
}

function decide(f: HandshakeFacts): HandshakeAction {
  const { peer } = f;
  const holdsData = !f.tiebreaker && peer.diskState !== 'Diskless';
  if (holdsData && peer.size !== f.size)
    return { kind: 'park', state: 'Refused', reason: `peer size ${peer.size} differs from ${f.size}` };
  if (!f.primary || !holdsData) return { kind: 'observe' };
  if (peer.role === 'Primary') return { kind: 'retry', reason: 'peer is primary too' };
  const remote: GenerationView = {
    generation: peer.generation,
    diskState: peer.diskState,
    crashedPrimary: peer.crashedPrimary,
  };
  const d = decideSync(f.local, remote);
  // Reconciliation among survivors: where an earlier primary may have left this peer and us (or a
  // third replica) with different blocks, though the generations agree (reconciliation.ts).
  const reconcile = reconcileMarks(f.self, peer.activity, f.size).map(([offset, length]) => ({
    offset,
    length,
  }));
  const reconciling = `reconciliation: ${reconcile.length} ranges an earlier primary's activity log held on the peer or here resync from here`;
  switch (d.kind) {
    case 'none':
    case 'bitmap': {
      // The peer crashed as primary and we are primary now: it is the old primary, and it may hold
      // writes nobody acknowledged in the extents its activity log held. Those travel from here on
      // top of our bitmap; a peer that does not send them gets a full sync. (Its epoch says nothing
      // here: its replica server may already have stored ours.)
      if (peer.crashedPrimary) {
        const ranges = (peer.crashRanges ?? []).filter(([o, l]) => o + l <= f.size);
        if (peer.crashRanges && ranges.length === peer.crashRanges.length)
          return {
            kind: 'resync',
            full: false,
            mark: [...ranges.map(([offset, length]) => ({ offset, length })), ...reconcile],
            reason: 'peer is an old primary that crashed: its activity-log extents resync from here',
          };
        return {
          kind: 'resync',
          full: true,
          mark: [],
          reason: 'peer is an old primary that crashed (extents unknown)',
        };
      }
      if (d.kind === 'none') {
        const afterNone = afterNoneDecision(f.outOfSyncBytes, f.markedBeforePromotion);
        if (reconcile.length > 0)
          return { kind: 'resync', full: false, mark: reconcile, reason: `${d.reason}; ${reconciling}` };
        return afterNone.resync
          ? { kind: 'resync', full: false, mark: [], reason: d.reason, afterNone }
          : { kind: 'none', reason: d.reason };
      }
      if (d.source === 'peer') return peerIsNewer(d.reason);
      return {
        kind: 'resync',
        full: false,
        mark: reconcile,
        reason: reconcile.length > 0 ? `${d.reason}; ${reconciling}` : d.reason,
      };
    }
    case 'full':
      if (d.source === 'peer') return peerIsNewer(d.reason);
      return { kind: 'resync', full: true, mark: [], reason: d.reason };
    case 'split-brain': {
      // An Outdated peer is an old primary fenced by ours, which had quorum: whatever it wrote since
      // was never acknowledged (it held the acks for quorum). So is an old primary that crashed
      // (killed while it waited for a quorum it had lost, with writes in flight on its own disk
      // only; found by the simulation, seed 16). Either is discarded, its blocks saved first.
      const fencedPeer = (peer.diskState === 'Outdated' || peer.crashedPrimary) && f.quorum !== 'off';
      if (fencedPeer)
        return {
          kind: 'discard',
          automatic: true,
          reason: `split-brain with a fenced or crashed old primary: its unacknowledged writes are saved, then discarded`,
        };
      // The peer acknowledged nothing since it parted from our data: its side holds only writes that
      // nobody was told of (an old primary that named its data anew, then lost its quorum before any
      // acknowledgement: simulation, `full` seed 78).
      if (peer.lastAcked !== undefined && holdsGeneration(f.local.generation, peer.lastAcked))
        return {
          kind: 'discard',
          automatic: true,
          reason: `split-brain with a peer that acknowledged nothing since it parted from our data (its last acknowledgement was in generation ${peer.lastAcked}, which we hold): its unacknowledged writes are saved, then discarded`,
        };
      const r = resolveSplitBrain(f.afterSplitBrain, f.localSide, {
        changedBlocks: peer.changedBlocks,
        promotedAt: peer.promotedAt,
        current: peer.generation.current,
      });
      if ((r.kind === 'discard' && r.loser === 'peer') || f.forcedSurvivor)
        return { kind: 'discard', automatic: false, reason: `split-brain: ${d.reason}; ${r.reason}` };
      return { kind: 'park', state: 'SplitBrain', reason: `split-brain: ${d.reason}; ${r.reason}` };
    }
    case 'unrelated':
      return { kind: 'park', state: 'Unrelated', reason: d.reason };
    case 'no-source':
      return { kind: 'park', state: 'Refused', reason: d.reason };
  }
}

/**
 * What every refusal of a promotion because this replica is behind says (a peer's newer or diverged
 * data, or a generation witnessed newer than its own): the node agent reports such a replica not up to
 * date until a newer copy runs elsewhere (src/agent/agent.ts), else the manager would pick it again.
 */
export const BEHIND_REFUSAL = /holds newer or diverged data|may lack acknowledged writes/;

/**
 * Why a reachable peer forbids this replica's promotion, if it does: it holds newer or diverged data,
 * and this replica may have been away while another primary wrote (its disk still says UpToDate).
 * An Outdated peer does not (a newer primary fenced it: it holds no acknowledged data we lack), nor
 * an old primary that crashed on our generation: it started a new generation before any write
 * without us, and acknowledged none before we had it (protocol C), so its activity-log extents hold
 * only unacknowledged writes, resynced to it from the new primary at the handshake (the simulation's
 * open issue 2: promotions refused for ever while that old primary was up again).
 */
export function promotionBlockedBy(local: GenerationView, peer: PeerState): string | undefined {
  const missed = missedWrites(local, peer.witnessed);
  if (missed) return `peer ${peer.node} witnessed ${missed}; promote the replica that holds them`;
  // A replica whose resync did not finish held its generation's data before it began, acknowledged
  // writes among them (simulation, `full` seed 63: a replica that was down promoted over it).
  const held = peer.diskState === 'Inconsistent' ? missedWrites(local, peer.generation) : undefined;
  if (held)
    return `peer ${peer.node} (Inconsistent: its resync did not finish) held ${held}; promote the replica that holds them`;
  if (peer.diskState === 'Diskless' || peer.diskState === 'Outdated') return undefined;
  const d = decideSync(local, {
    generation: peer.generation,
    diskState: peer.diskState,
    crashedPrimary: peer.crashedPrimary,
  });
  const crashedOnOurs =
    peer.crashedPrimary && !local.crashedPrimary && peer.generation.current === local.generation.current;
  const newer = (d.kind === 'bitmap' || d.kind === 'full') && d.source === 'peer' && !crashedOnOurs;
  // A diverged peer that acknowledged nothing since it parted from our data is discarded at the
  // handshake (decideHandshake): its side holds no write anyone was told of.
  const unacknowledged =
    d.kind === 'split-brain' &&
    peer.lastAcked !== undefined &&
    holdsGeneration(local.generation, peer.lastAcked);
  if (newer || (d.kind === 'split-brain' && !unacknowledged) || d.kind === 'unrelated')
    return `peer ${peer.node} holds newer or diverged data (${d.kind}: ${d.reason}); promote it instead`;
  return undefined;
}

/**
 * Why this replica may not be promoted although its own disk says UpToDate, if so: it witnessed a
 * newer generation than its data (its own record), or a reachable peer holds or witnessed newer or
 * diverged data (promotionBlockedBy). `force` (the operator) skips this; quorum and epochs still hold.
 */
export function promotionRefusal(
  local: { generation: Generation; diskState: GenerationView['diskState']; witnessed?: Generation },
  peers: PeerState[],
): string | undefined {
  const view: GenerationView = {
    generation: local.generation,
    diskState: local.diskState,
    crashedPrimary: false,
  };
  const missed = missedWrites(view, local.witnessed);
  if (missed) return `this replica witnessed ${missed}; promote the replica that holds them`;
  for (const peer of peers) {
    const reason = promotionBlockedBy(view, peer);
    if (reason) return reason;
  }
  return undefined;
}

/**
 * Why a primary's generation that a voter witnessed shows this replica to lack acknowledged writes,
 * if it does (newer than its data, or diverged from it). Such a peer, or this replica's own record,
 * forbids its promotion whatever its disk says: a primary acknowledges nothing in a new
 * generation before every voter adopted or witnessed it (replicated-device.ts, #untilWitnessed),
 * so this replica may have missed acknowledged writes. With two replicas and a tiebreaker,
 * the replica cut from the primary while both reached the tiebreaker would otherwise be promoted once
 * the primary died; with three, one that was down, by the vote of one still resyncing (simulation,
 * `full` seeds 1 and 16, once the model promoted as the manager does).
 */
export function missedWrites(local: GenerationView, witnessed: Generation | undefined): string | undefined {
  if (!witnessed || witnessed.current === NO_ID) return undefined;
  const r = relate(local.generation, witnessed);
  if (r === 'same' || r === 'newer') return undefined;
  const how = r === 'older' ? 'newer data' : r === 'diverged' ? 'diverged data' : 'data unrelated to ours';
  return `${how} of a primary (generation ${witnessed.current}): this replica may lack acknowledged writes`;
}

/** A peer with newer data than the primary's is refused (the agent promoted the wrong replica). */
function peerIsNewer(why: string): HandshakeAction {
  return { kind: 'park', state: 'Refused', reason: `peer holds newer data than this primary (${why})` };
}
