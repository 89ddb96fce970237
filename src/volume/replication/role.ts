/**
 * Role, quorum and epoch decisions of one replica (pure, no clocks: time is passed in).
 *
 * - Quorum: a majority of the volume's voters (every replica, this one included, plus the optional
 *   diskless tiebreaker) must be reachable. Two replicas without a tiebreaker therefore lose quorum
 *   when either is away: add a tiebreaker to survive one failure.
 * - Epochs are fencing tokens: a promotion must carry an epoch strictly higher than any this replica
 *   has seen; writes stamped with a lower epoch than the highest seen are refused; a primary that
 *   sees a higher epoch is fenced (its writes fail, it must demote).
 */
import type { DiskState } from './generation.ts';

export type Role = 'Primary' | 'Secondary';
export type QuorumPolicy = 'suspend-io' | 'io-error' | 'off';
export type ConnectionState =
  | 'StandAlone'
  | 'Connecting'
  | 'Handshaking'
  | 'Connected'
  | 'SyncSource'
  | 'SyncTarget'
  | 'SplitBrain'
  | 'Unrelated'
  | 'AuthFailed'
  | 'Refused';

export interface PeerView {
  id: string;
  /** A diskless tiebreaker votes but holds no data. */
  tiebreaker: boolean;
  connection: ConnectionState;
  diskState?: DiskState;
  role?: Role;
}

export interface ReplicaRoleState {
  role: Role;
  diskState: DiskState;
  /** Highest epoch seen (own promotions and every frame received). */
  epoch: number;
  /** Set when this primary saw a higher epoch elsewhere: it must not write any more. */
  fenced: boolean;
  quorumPolicy: QuorumPolicy;
  peers: PeerView[];
}

/** Connected peers count as votes only once the handshake is through. */
export function connectionVotes(connection: ConnectionState): boolean {
  return connection === 'Connected' || connection === 'SyncSource' || connection === 'SyncTarget';
}

function votes(peer: PeerView): boolean {
  return connectionVotes(peer.connection);
}

export interface QuorumView {
  voters: number;
  reachable: number;
  needed: number;
  hasQuorum: boolean;
}

export function quorum(s: ReplicaRoleState): QuorumView {
  const voters = 1 + s.peers.length;
  const reachable = 1 + s.peers.filter(votes).length;
  const needed = Math.floor(voters / 2) + 1;
  return { voters, reachable, needed, hasQuorum: s.quorumPolicy === 'off' || reachable >= needed };
}

export type Decision = { ok: true; next: ReplicaRoleState } | { ok: false; reason: string };

export function promote(s: ReplicaRoleState, epoch: number): Decision {
  if (s.role === 'Primary' && !s.fenced && epoch === s.epoch) return { ok: true, next: s };
  if (!Number.isSafeInteger(epoch) || epoch <= s.epoch) {
    return { ok: false, reason: `epoch ${epoch} is not higher than the highest seen (${s.epoch})` };
  }
  if (s.diskState !== 'UpToDate') return { ok: false, reason: `local disk is ${s.diskState}, not UpToDate` };
  const otherPrimary = s.peers.find((p) => votes(p) && p.role === 'Primary');
  if (otherPrimary) return { ok: false, reason: `peer ${otherPrimary.id} is primary` };
  const q = quorum(s);
  if (!q.hasQuorum)
    return {
      ok: false,
      reason: `no quorum (${q.reachable} of ${q.voters} voters reachable, ${q.needed} needed)`,
    };
  return { ok: true, next: { ...s, role: 'Primary', epoch, fenced: false } };
}

export function demote(s: ReplicaRoleState): Decision {
  return { ok: true, next: { ...s, role: 'Secondary', fenced: false } };
}

export type WriteAdmission =
  | { kind: 'proceed' }
  | { kind: 'suspend'; reason: string }
  | { kind: 'fail'; errno: 'EIO' | 'EROFS'; reason: string };

/** May the primary start an application write now? */
export function admitWrite(s: ReplicaRoleState): WriteAdmission {
  if (s.role !== 'Primary') return { kind: 'fail', errno: 'EROFS', reason: 'not primary' };
  if (s.fenced) return { kind: 'fail', errno: 'EIO', reason: 'fenced by a newer epoch' };
  if (s.diskState !== 'UpToDate')
    return { kind: 'fail', errno: 'EIO', reason: `local disk is ${s.diskState}` };
  const q = quorum(s);
  if (q.hasQuorum) return { kind: 'proceed' };
  const reason = `quorum lost (${q.reachable} of ${q.voters} voters reachable, ${q.needed} needed)`;
  return s.quorumPolicy === 'io-error' ? { kind: 'fail', errno: 'EIO', reason } : { kind: 'suspend', reason };
}

/**
 * Must the primary name its data anew before this write is acknowledged? Only when a data peer is
 * not in sync (it misses writes from now on) and a quorum is reachable: without one nothing is
 * acknowledged (the write fails or waits), and a new name would make this disk look diverged from
 * the replicas a newer primary writes on, a false split-brain that parks them (DRBD 9.0.20 checks
 * its quorum before a new current UUID too; found by the simulation, `full` seed 13). The writes
 * that reached this disk unacknowledged are resynced from the next primary instead (`stepDown`).
 */
export function mustStartGeneration(f: {
  rotated: boolean;
  allInSync: boolean;
  hasQuorum: boolean;
}): boolean {
  return !f.rotated && !f.allInSync && f.hasQuorum;
}

export interface StepDown {
  /** Tell the peers the activity log is empty: they hold every write, nothing to reconcile. */
  shipEmptyActivity: boolean;
  /**
   * Clear primaryOpen: this disk holds no write that some peer may lack unknowingly. Kept when a
   * write failed after it could reach this disk (quorum lost, fenced, a peer refused): the replica
   * then reports itself as an old primary that stopped uncleanly, and the next primary resyncs its
   * activity-log extents to it, as after a crash.
   */
  clearPrimaryOpen: boolean;
}

/** What a demote may declare, from how it ended. */
export function stepDown(f: {
  flushed: boolean;
  fenced: boolean;
  inFlight: number;
  localSynced: boolean;
  unacknowledgedLocal: boolean;
}): StepDown {
  return {
    shipEmptyActivity: f.flushed && !f.fenced && f.inFlight === 0 && !f.unacknowledgedLocal,
    clearPrimaryOpen: f.localSynced && !f.unacknowledgedLocal,
  };
}

/**
 * A primary that learns of a newer epoch is fenced, and its disk is Outdated from that moment (a newer
 * primary with quorum exists; what this one wrote since was never acknowledged): stored at once, so a
 * guard's kill before the demote leaves no UpToDate old primary whose diverged side blocks every
 * promotion (simulation, `full`: hung agents; 34 -> 19 of seeds 1-100 ended without a primary).
 */
export function diskStateWhenFenced(d: DiskState): DiskState {
  return d === 'UpToDate' ? 'Outdated' : d;
}

/** A frame stamped with `epoch` arrived from a peer. */
export function observeEpoch(s: ReplicaRoleState, epoch: number): ReplicaRoleState {
  if (epoch <= s.epoch) return s;
  return { ...s, epoch, fenced: s.role === 'Primary' ? true : s.fenced };
}

export type PeerWriteAdmission =
  | { accept: true }
  | { accept: false; reason: 'stale-epoch' | 'not-secondary' };

/** May this replica apply a write that a primary stamped with `epoch`? (call observeEpoch first) */
export function admitPeerWrite(s: ReplicaRoleState, epoch: number): PeerWriteAdmission {
  if (epoch < s.epoch) return { accept: false, reason: 'stale-epoch' };
  if (s.role === 'Primary' && !s.fenced) return { accept: false, reason: 'not-secondary' };
  return { accept: true };
}

export function setPeer(s: ReplicaRoleState, peer: PeerView): ReplicaRoleState {
  const peers = s.peers.some((p) => p.id === peer.id)
    ? s.peers.map((p) => (p.id === peer.id ? peer : p))
    : [...s.peers, peer];
  return { ...s, peers };
}
