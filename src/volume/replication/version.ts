/**
 * Which protocol version a replication connection speaks (pure), so that a pair of daemons of two
 * cvserver versions keeps replicating during a rolling upgrade.
 *
 * The client's HELLO announces the versions it speaks (`versions: {min, max}`), the server answers
 * with the highest one both speak in its CHALLENGE (`version`), and every frame after the handshake
 * carries exactly that version. Both are bound into the authentication proofs, so a man in the middle
 * cannot talk the pair down to an older version. A HELLO without `versions` comes from a daemon of
 * before the negotiation: it speaks only its frame's version, and gets a CHALLENGE without `version`.
 * No common version: the server answers with an ERROR that says which versions each side speaks, and
 * both sides log it and show it in their status.
 *
 *   version 2  frames with a GMAC tag; STATE without `sent`
 *   version 3  STATE may say why it was sent (`sent`: reply or update)
 *   version 4  ACTIVITY (the primary's activity-log ranges) and STATE's `activity` (reconciliation.ts)
 *   version 5  GENERATION (a new generation told to a replica not in sync, and the tiebreaker),
 *              STATE's `witnessed` (the newest primary's generation a replica heard of) and
 *              `lastAcked` (the generation of its last acknowledgement as primary)
 *
 * A change that an older peer would refuse (a new field in a strict message, a new message type)
 * raises PROTOCOL_VERSION, and this module says what to leave out when speaking an older version.
 */
import { PROTOCOL_VERSION, type VersionRange } from './frame.ts';
import type { Message } from './protocol.ts';

export type { VersionRange };

/** The oldest version this build still speaks. */
export const MIN_PROTOCOL_VERSION = 2;
/** The first version whose STATE may carry `sent`. */
export const STATE_SENT_SINCE = 3;
/** The first version with ACTIVITY and STATE's `activity`: older peers are neither sent nor report them. */
export const ACTIVITY_SINCE = 4;
/** The first version with GENERATION and STATE's `witnessed` and `lastAcked`: older peers neither get nor report them. */
export const WITNESSED_SINCE = 5;
/** Limits what a daemon speaks (tests of mixed pairs; an operator pinning the old version). */
export const MAX_VERSION_ENV = 'CVSERVER_REPLICATION_MAX_VERSION';

export function rangeText(r: VersionRange): string {
  return r.min === r.max ? `${r.min}` : `${r.min}-${r.max}`;
}

/** The versions this daemon speaks: all it knows, or fewer when `CVSERVER_REPLICATION_MAX_VERSION` says so. */
export function localVersions(env: NodeJS.ProcessEnv = process.env): VersionRange {
  const raw = env[MAX_VERSION_ENV];
  if (raw === undefined || raw === '') return { min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION };
  const max = Number(raw);
  if (!Number.isInteger(max) || max < MIN_PROTOCOL_VERSION || max > PROTOCOL_VERSION)
    throw new Error(
      `${MAX_VERSION_ENV}=${raw}: expected a replication protocol version from ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`,
    );
  return { min: MIN_PROTOCOL_VERSION, max };
}

/** What a HELLO says the client speaks: its announcement, or (before negotiation) its frame's version. */
export function helloVersions(frameVersion: number, announced: VersionRange | undefined): VersionRange {
  return announced ?? { min: frameVersion, max: frameVersion };
}

export type Negotiated = { ok: true; version: number } | { ok: false; reason: string };

/** The highest version both sides speak, or why there is none (said from `local`'s side). */
export function negotiate(
  local: VersionRange,
  peer: VersionRange,
  names: { local: string; peer: string },
): Negotiated {
  const version = Math.min(local.max, peer.max);
  if (version >= Math.max(local.min, peer.min)) return { ok: true, version };
  const older = peer.max < local.min ? names.peer : names.local;
  return {
    ok: false,
    reason:
      `no common replication protocol version: ${names.local} speaks ${rangeText(local)}, ` +
      `${names.peer} speaks ${rangeText(peer)} (upgrade cvserver on ${older})`,
  };
}

/** The message as a peer speaking `version` expects it: what that version does not know is left out. */
export function forVersion(m: Message, version: number): Message {
  if (m.type !== 'state') return m;
  let state = m.state;
  if (version < STATE_SENT_SINCE && state.sent !== undefined) {
    const { sent: _sent, ...rest } = state;
    state = rest;
  }
  if (version < ACTIVITY_SINCE && state.activity !== undefined) {
    const { activity: _activity, ...rest } = state;
    state = rest;
  }
  if (version < WITNESSED_SINCE && (state.witnessed !== undefined || state.lastAcked !== undefined)) {
    const { witnessed: _witnessed, lastAcked: _lastAcked, ...rest } = state;
    state = rest;
  }
  return state === m.state ? m : { type: 'state', state };
}
