/**
 * The cluster's stored format, and whether an agent may act on the cluster (pure): what lets an agent
 * of the next version join a cluster running this one, and stops an agent from misreading a cluster
 * whose format it does not know.
 *
 * Every agent says in its node record which stored formats it reads and writes (`formats`; an agent
 * from before this rule says nothing and reads format 1 only). The format the cluster uses is the
 * record `/cvserver/<cluster>/format` (none yet: format 1, and the first agent that acts writes it).
 * The manager raises it only when every live agent supports the higher one; an agent that finds a
 * format outside its range does not act on the cluster: at start it exits with one line, and while
 * running it stops deciding (no manager step, no new assignments) but keeps its lease and what runs, so
 * that nothing fails over because of it. Only format 1 exists so far: nothing is raised yet.
 */
import { RECORD_VERSION } from './records.ts';

/** Stored formats, inclusive. */
export interface FormatRange {
  min: number;
  max: number;
}

/** What this agent reads and writes. */
export const AGENT_FORMATS: FormatRange = { min: 1, max: RECORD_VERSION };
/** What an agent reads whose node record does not say (one from before the format rule). */
export const LEGACY_FORMATS: FormatRange = { min: 1, max: 1 };
/** A cluster without a format record stores format 1 (it was made before the record existed). */
export const UNRECORDED_FORMAT = 1;

export function formatsOf(node: { formats?: FormatRange | undefined }): FormatRange {
  return node.formats ?? LEGACY_FORMATS;
}

export function rangeText(r: FormatRange): string {
  return `${r.min}-${r.max}`;
}

export type FormatDecision =
  /** Use `format`; `create`: the record is missing and this agent writes it. */
  | { kind: 'use'; format: number; create: boolean }
  /** Every live agent reads and writes `to`: the manager raises the cluster to it. */
  | { kind: 'raise'; from: number; to: number; reason: string }
  /** This agent must not act on this cluster. */
  | { kind: 'refuse'; format: number; reason: string };

export interface FormatContext {
  cluster: string;
  /** This agent's release, for the message. */
  agentVersion: string;
  /** What this agent reads and writes. */
  mine: FormatRange;
  /** Every live agent's range, this one's included (from their node records). */
  live: FormatRange[];
}

/** The format the cluster uses, from its record (`stored`, undefined when there is none) and the live agents. */
export function decideFormat(stored: number | undefined, c: FormatContext): FormatDecision {
  const format = stored ?? UNRECORDED_FORMAT;
  const mine = c.mine;
  if (format > mine.max || format < mine.min) {
    const fix =
      format > mine.max
        ? 'upgrade cvserver on this node first'
        : `this release no longer reads it: upgrade the other nodes with a release that reads formats ${format} and ${mine.min} first`;
    return {
      kind: 'refuse',
      format,
      reason: `cluster ${c.cluster} stores format ${format}; this agent (cvserver ${c.agentVersion}) reads formats ${rangeText(mine)}: ${fix}`,
    };
  }
  const all = [mine, ...c.live];
  const to = Math.min(...all.map((r) => r.max));
  if (to > format && all.every((r) => r.min <= to))
    return {
      kind: 'raise',
      from: format,
      to,
      reason: `every live agent reads and writes format ${to} (ranges ${c.live.map(rangeText).join(', ')})`,
    };
  return { kind: 'use', format, create: stored === undefined };
}

/** Whether this agent may decide anything for the cluster this round, and if not, why. */
export type Gate = { act: true } | { act: false; reason: string };

/**
 * An agent acts (runs the manager's step, applies the assignment table) only when it knows the cluster's
 * format and could read the manager's state: a state record set aside (another format, malformed) must
 * never be taken for "no state yet", which would start the manager from scratch and hand every node an
 * empty table.
 */
export function clusterGate(format: FormatDecision, stateProblem: string | undefined): Gate {
  if (format.kind === 'refuse') return { act: false, reason: format.reason };
  if (stateProblem !== undefined)
    return {
      act: false,
      reason: `the manager's state record is set aside (${stateProblem}): no manager decisions and no new assignments until it can be read`,
    };
  return { act: true };
}
