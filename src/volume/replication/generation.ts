/**
 * Generation identifiers: who syncs from whom, decided from identifiers alone (pure).
 *
 * Each replica keeps a `current` id (names the data it holds), a `bitmap` id (the `current` of the
 * data it diverged from while tracking changes in its dirty bitmap, "0" when it tracks nothing) and
 * a short `history` of older ids. The rules that change them are at the bottom of this file.
 */

export const NO_ID = '0';
export const HISTORY_LENGTH = 8;

export interface Generation {
  current: string;
  bitmap: string;
  history: string[];
}

export type DiskState = 'UpToDate' | 'Outdated' | 'Inconsistent' | 'Diskless';

/** What one side presents at handshake. */
export interface GenerationView {
  generation: Generation;
  diskState: DiskState;
  /** It was primary and did not shut down cleanly: its activity-log extents may hold unreplicated writes. */
  crashedPrimary: boolean;
}

export type SyncDecision =
  | { kind: 'none'; reason: string }
  | { kind: 'bitmap'; source: 'local' | 'peer'; reason: string }
  | { kind: 'full'; source: 'local' | 'peer'; reason: string }
  | { kind: 'split-brain'; reason: string }
  | { kind: 'unrelated'; reason: string }
  /** Nobody holds good data to sync from (both Inconsistent/Diskless): refuse, stay disconnected. */
  | { kind: 'no-source'; reason: string };

function hasData(v: GenerationView): boolean {
  return v.diskState !== 'Diskless' && v.diskState !== 'Inconsistent';
}

/**
 * Decides at handshake what must happen between the local replica and a peer. Symmetric: swapping
 * the arguments swaps `source` (property-tested).
 */
export function decideSync(local: GenerationView, peer: GenerationView): SyncDecision {
  if (local.diskState === 'Diskless' || peer.diskState === 'Diskless') {
    return { kind: 'none', reason: 'a diskless side holds no data' };
  }
  const lData = hasData(local);
  const pData = hasData(peer);
  if (!lData && !pData) return { kind: 'no-source', reason: 'both sides are Inconsistent' };
  if (!pData) return { kind: 'full', source: 'local', reason: 'peer disk is Inconsistent' };
  if (!lData) return { kind: 'full', source: 'peer', reason: 'local disk is Inconsistent' };

  const l = local.generation;
  const p = peer.generation;
  if (l.current === NO_ID && p.current === NO_ID) {
    return { kind: 'none', reason: 'both replicas are new (never written)' };
  }
  if (p.current === NO_ID) return { kind: 'full', source: 'local', reason: 'peer is new or wiped' };
  if (l.current === NO_ID) return { kind: 'full', source: 'peer', reason: 'local replica is new or wiped' };

  if (l.current === p.current) {
    if (local.crashedPrimary && peer.crashedPrimary) {
      return { kind: 'split-brain', reason: 'both sides crashed as primary on the same generation' };
    }
    if (local.crashedPrimary) {
      return {
        kind: 'bitmap',
        source: 'local',
        reason: 'local crashed as primary: resync its activity-log extents',
      };
    }
    if (peer.crashedPrimary) {
      return {
        kind: 'bitmap',
        source: 'peer',
        reason: 'peer crashed as primary: resync its activity-log extents',
      };
    }
    return { kind: 'none', reason: 'same current generation' };
  }
  // One side moved on from the other's current while tracking the difference in its bitmap.
  if (l.bitmap !== NO_ID && l.bitmap === p.current) {
    return {
      kind: 'bitmap',
      source: 'local',
      reason: "local wrote since the peer's generation (tracked in bitmap)",
    };
  }
  if (p.bitmap !== NO_ID && p.bitmap === l.current) {
    return {
      kind: 'bitmap',
      source: 'peer',
      reason: 'peer wrote since the local generation (tracked in bitmap)',
    };
  }
  // Both moved on from a common ancestor: both wrote since they parted.
  const lAnc = ancestors(l);
  const pAnc = ancestors(p);
  if (l.bitmap !== NO_ID && l.bitmap === p.bitmap) {
    return { kind: 'split-brain', reason: 'both sides wrote since they parted (same bitmap generation)' };
  }
  // The peer's data is an older generation of ours, but the bitmap since then is gone.
  if (lAnc.has(p.current)) {
    return { kind: 'full', source: 'local', reason: "peer's generation is an old local one (no bitmap)" };
  }
  if (pAnc.has(l.current)) {
    return { kind: 'full', source: 'peer', reason: 'local generation is an old peer one (no bitmap)' };
  }
  for (const id of lAnc) {
    if (pAnc.has(id))
      return { kind: 'split-brain', reason: 'both sides descend from a common generation and diverged' };
  }
  return { kind: 'unrelated', reason: 'no common generation: the replicas hold unrelated data' };
}

/**
 * How the data named `local` relates to the data named `other` (another replica's, or a primary's
 * that a replica witnessed), from the identifiers alone: `older` when other descends from local
 * (local's current is among other's ancestors), `newer` the other way round, `diverged` when both
 * moved on from a common ancestor, `unrelated` when nothing is shared (or an ancestor aged out of
 * the 8-id history: the caller must treat it as unknown).
 */
export type Relation = 'same' | 'newer' | 'older' | 'diverged' | 'unrelated';

export function relate(local: Generation, other: Generation): Relation {
  if (local.current === other.current) return 'same';
  const lAnc = ancestors(local);
  const oAnc = ancestors(other);
  if (lAnc.has(other.current)) return 'newer';
  if (oAnc.has(local.current)) return 'older';
  for (const id of lAnc) if (oAnc.has(id)) return 'diverged';
  return 'unrelated';
}

/** The data named `g` is, or descends from, the data named `id`. */
export function holdsGeneration(g: Generation, id: string): boolean {
  return id !== NO_ID && (g.current === id || ancestors(g).has(id));
}

function ancestors(g: Generation): Set<string> {
  const s = new Set<string>();
  if (g.bitmap !== NO_ID) s.add(g.bitmap);
  for (const h of g.history) if (h !== NO_ID) s.add(h);
  return s;
}

function pushHistory(history: string[], id: string): string[] {
  if (id === NO_ID) return history.slice(0, HISTORY_LENGTH);
  return [id, ...history.filter((h) => h !== id)].slice(0, HISTORY_LENGTH);
}

/**
 * A primary is about to write while at least one replica is not connected (or on first write after
 * promotion without all peers): the data it creates gets a new name. If it already tracks a
 * divergence (bitmap id set) the bitmap keeps pointing at the older generation the absent peer holds,
 * and the intermediate current goes to history.
 */
export function startNewGeneration(g: Generation, newId: string): Generation {
  if (newId === NO_ID || newId === g.current) throw new Error('new generation id must be fresh');
  if (g.bitmap === NO_ID)
    return { current: newId, bitmap: g.current, history: g.history.slice(0, HISTORY_LENGTH) };
  return { current: newId, bitmap: g.bitmap, history: pushHistory(g.history, g.current) };
}

/** The source finished syncing every peer: nothing is tracked any more. */
export function clearBitmapGeneration(g: Generation): Generation {
  if (g.bitmap === NO_ID) return g;
  return { current: g.current, bitmap: NO_ID, history: pushHistory(g.history, g.bitmap) };
}

/** A sync target finished (bitmap or full): it now holds the source's data and names it the same way. */
export function adoptSourceGeneration(target: Generation, source: Generation): Generation {
  let history = pushHistory(source.history, source.bitmap);
  history = pushHistory(history, target.current === source.current ? NO_ID : target.current);
  return { current: source.current, bitmap: NO_ID, history };
}

export function sameGeneration(a: Generation, b: Generation): boolean {
  return (
    a.current === b.current &&
    a.bitmap === b.bitmap &&
    a.history.length === b.history.length &&
    a.history.every((id, i) => id === b.history[i])
  );
}

/** A fresh, random 64-bit generation id as 16 hex digits (never "0"). */
export function randomGenerationId(random: (n: number) => Buffer): string {
  for (;;) {
    const id = random(8).toString('hex');
    if (/[1-9a-f]/.test(id)) return id;
  }
}

// ---- split-brain resolution (after-sb policies, for the case where neither side is primary now)

export type AfterSplitBrainPolicy =
  | 'disconnect'
  | 'discard-zero-changes'
  | 'discard-younger-primary'
  | 'discard-least-changes';

export interface SplitBrainSide {
  /** Blocks written since the sides parted (bits set in its bitmap against the common generation). */
  changedBlocks: number;
  /** When it last became primary (ms since epoch; 0 if never during the split). */
  promotedAt: number;
  /** Its current generation id: the symmetric tie-break when neither side changed anything. */
  current: string;
}

export type SplitBrainResolution =
  | { kind: 'disconnect'; reason: string }
  | { kind: 'discard'; loser: 'local' | 'peer'; reason: string };

export function resolveSplitBrain(
  policy: AfterSplitBrainPolicy,
  local: SplitBrainSide,
  peer: SplitBrainSide,
): SplitBrainResolution {
  switch (policy) {
    case 'disconnect':
      return { kind: 'disconnect', reason: 'policy disconnect: an operator must choose the survivor' };
    case 'discard-zero-changes': {
      const lz = local.changedBlocks === 0;
      const pz = peer.changedBlocks === 0;
      if (lz && !pz) return { kind: 'discard', loser: 'local', reason: 'local made no changes' };
      if (pz && !lz) return { kind: 'discard', loser: 'peer', reason: 'peer made no changes' };
      if (lz && pz) {
        // Both sides must pick the same loser: the lower current id loses (nothing is lost either way).
        const loser = local.current < peer.current ? 'local' : 'peer';
        return { kind: 'discard', loser, reason: 'neither side made changes' };
      }
      return { kind: 'disconnect', reason: 'both sides made changes' };
    }
    case 'discard-younger-primary':
      if (local.promotedAt > peer.promotedAt)
        return { kind: 'discard', loser: 'local', reason: 'local became primary later' };
      if (peer.promotedAt > local.promotedAt)
        return { kind: 'discard', loser: 'peer', reason: 'peer became primary later' };
      return { kind: 'disconnect', reason: 'both became primary at the same time' };
    case 'discard-least-changes':
      if (local.changedBlocks < peer.changedBlocks)
        return { kind: 'discard', loser: 'local', reason: 'local changed fewer blocks' };
      if (peer.changedBlocks < local.changedBlocks)
        return { kind: 'discard', loser: 'peer', reason: 'peer changed fewer blocks' };
      return { kind: 'disconnect', reason: 'both sides changed the same number of blocks' };
  }
}
