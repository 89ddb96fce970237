/**
 * What a primary knows about a peer's disk and why (pure): where the state it shows came from, when,
 * and what a handshake that found nothing to sync still sends. The replica server pushes a STATE
 * whenever its durable state changes, and answers a primary's STATE only once what that STATE made it
 * decide is durable; so on a live link the last STATE received is the peer's current state.
 */
import type { PeerState } from './protocol.ts';

/**
 * Where the disk state a primary shows for a peer came from:
 * - `handshake`: the STATE the peer sent when this connection was made;
 * - `state-reply`: its answer to a later STATE of ours (after a resync, a new data generation);
 * - `peer-update`: a STATE the peer pushed on its own because its durable state changed;
 * - `none`: no connection, nothing known (the state was dropped when the link went down).
 */
export type DiskStateSource = 'handshake' | 'state-reply' | 'peer-update' | 'none';

/** The source of a STATE received on a connection (`first`: the connection's first one). */
export function stateSource(first: boolean, sent: PeerState['sent']): DiskStateSource {
  if (first) return 'handshake';
  return sent === 'update' ? 'peer-update' : 'state-reply';
}

/**
 * The parts of a STATE a primary acts on. A replica pushes a STATE to a connected primary when
 * these differ from the last ones it sent there (not for changedBlocks, which moves with every write).
 */
export function stateKey(s: PeerState): string {
  const g = s.generation;
  return [
    s.role,
    s.diskState,
    s.epoch,
    s.crashedPrimary,
    g.current,
    g.bitmap,
    g.history.join(','),
    s.witnessed?.current ?? '',
  ].join('|');
}

export interface DiskStateReport {
  diskStateSource: DiskStateSource;
  /** When the shown state was received (or, for `none`, dropped), ISO 8601. */
  diskStateUpdatedAt: string;
  diskStateAgeMs: number;
}

export function diskStateReport(source: DiskStateSource, at: number, now: number): DiskStateReport {
  return {
    diskStateSource: source,
    diskStateUpdatedAt: new Date(at).toISOString(),
    diskStateAgeMs: Math.max(0, now - at),
  };
}

/** What follows a handshake decision of `none` (same data generation on both sides). */
export type AfterNone = { resync: false; reason: string } | { resync: true; bytes: number; reason: string };

/**
 * `none` compares generation ids only; the per-peer bitmap can still hold extents this node marked
 * for that peer earlier (writes unflushed when a link dropped, its activity log after a crash as
 * primary), and nothing but a resync from this node clears them. Those are sent: both sides carry
 * the same generation, yet their blocks can differ there (a primary that died with writes in flight
 * can have reached one secondary and not the other). The log must say so, with the amount.
 * `fromBefore`: bytes that were already marked when this node became primary (carried over).
 */
export function afterNoneDecision(outOfSyncBytes: number, fromBefore: number): AfterNone {
  if (outOfSyncBytes <= 0) return { resync: false, reason: 'nothing marked out of sync for this peer' };
  const carried = Math.min(fromBefore, outOfSyncBytes);
  const origin =
    carried >= outOfSyncBytes
      ? 'all of it marked before this promotion'
      : carried > 0
        ? `${carried} bytes of it marked before this promotion`
        : 'marked since this promotion';
  return {
    resync: true,
    bytes: outOfSyncBytes,
    reason:
      `same generation, but ${outOfSyncBytes} bytes are marked out of sync for this peer (${origin}: ` +
      "writes unflushed when a link dropped, or this node's activity log after a crash as primary); " +
      'they are resent because the blocks may differ there although the generation is the same',
  };
}
