/**
 * The manager's inputs and outputs. A real environment (etcd, node agents, clocks) and the simulator
 * both produce an Observation and carry out Commands; the manager itself does no I/O.
 */

export type LeaseStatus = 'alive' | 'expired' | 'never';
export type Desired = 'started' | 'stopped' | 'disabled';
/** What the node running a vserver reports about it. */
export type RunStatus = 'starting' | 'running' | 'healthy' | 'failed' | 'stopping' | 'stopped';

export interface Policy {
  /** Restarts in place on one node within `failure_timeout` before relocating. */
  max_restarts: number;
  /** Relocations within `failure_timeout` before the vserver is marked failed. */
  max_relocations: number;
  /** Seconds after which a health failure is forgotten. */
  failure_timeout: number;
  /** Move a vserver back to a better-preferred node when one becomes eligible again. */
  failback: boolean;
}

export interface NodeObservation {
  name: string;
  lease: LeaseStatus;
  standby: boolean;
}

export interface Report {
  status: RunStatus;
  /** When the status last changed: a failure is handled once per `since`. */
  since: number;
  /**
   * The epoch the node holds it with. A report of an older epoch than the assignment's is stale (the node
   * has not picked up the new assignment yet): it is not taken as the new copy stopping or failing.
   */
  epoch?: number;
}

export interface VserverObservation {
  name: string;
  desired: Desired;
  preferred: string[];
  avoid: string[];
  /** Vservers that must not share a node with this one. */
  antiAffinity: string[];
  /** Nodes holding an up-to-date replica of the volume. */
  upToDate: string[];
  /** Nodes holding a replica that is behind (for the reasons in the log). */
  stale: string[];
  /** Reports published by nodes, by node name. */
  reports: Record<string, Report>;
}

export interface Observation {
  maintenance: boolean;
  nodes: NodeObservation[];
  vservers: VserverObservation[];
}

/** Operator requests, delivered once. */
export type OperatorEvent =
  | { kind: 'migrate'; vserver: string; node: string }
  | { kind: 'clear'; vserver: string };

export type Command =
  | { kind: 'assign'; vserver: string; node: string; epoch: number; reason: string }
  | { kind: 'restart'; vserver: string; node: string; epoch: number; reason: string }
  | { kind: 'stop'; vserver: string; node: string; reason: string }
  | { kind: 'mark'; vserver: string; status: 'failed' | 'blocked'; reason: string };

/** The manager's persistent state per vserver: stored in the cluster, so a new manager continues from it. */
export interface VserverState {
  node: string | null;
  epoch: number;
  assignedAt: number;
  /** A stop in progress and what to do once it is done. */
  stopping: {
    node: string;
    why: 'relocate' | 'migrate' | 'standby' | 'failback' | 'desired';
    target?: string;
  } | null;
  /** A requested migration not yet started. */
  migrateTo: string | null;
  failures: { at: number; node: string }[];
  relocations: number[];
  handledFailure: number;
  failed: string | null;
  /** Last status seen from the assigned node and last waiting reason, so the log says each thing once. */
  lastStatus: string;
  lastWait: string;
  /** Stray copies already told to stop: node -> report `since`. */
  strayStops: Record<string, number>;
}

export interface ManagerState {
  vservers: Record<string, VserverState>;
  nodes: Record<string, string>;
  maintenance: boolean;
}

export interface StepResult {
  state: ManagerState;
  commands: Command[];
  /** Events for the log, each with its reason. */
  log: string[];
}
