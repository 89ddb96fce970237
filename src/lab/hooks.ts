/**
 * The cluster steps of `lab up`, in order around the nodes' start. HOOK POINTS: today they do
 * nothing; the lead fills them in (issue 10) once `cvserver init`, `apply` and the agent exist.
 */
import type { Lab } from './layout.ts';

export interface LabHooks {
  /** After the network and cluster.yaml, before the nodes start: the cluster's credentials (`cvserver init`). */
  init(lab: Lab): Promise<void>;
  /** After the nodes started: store cluster.yaml in the cluster (`cvserver apply`, from a node). */
  apply(lab: Lab): Promise<void>;
  /** Last: wait until the demo answers at its URL. */
  waitForDemo(lab: Lab): Promise<void>;
}

// HOOK: cvserver init — credentials under lab.dir (secret, tls/) for every node.
export async function initClusterHook(_lab: Lab): Promise<void> {}

// HOOK: cvserver apply <lab.dir>/cluster.yaml, e.g. through labExec(lab, 'n1', [...]).
export async function applyClusterHook(_lab: Lab): Promise<void> {}

// HOOK: poll lab.demo.url + 'cgi-bin/records' from the host until it answers (with a deadline).
export async function waitForDemoHook(_lab: Lab): Promise<void> {}

export const clusterHooks: LabHooks = {
  init: initClusterHook,
  apply: applyClusterHook,
  waitForDemo: waitForDemoHook,
};

/** Network and node processes only (tests with a stand-in node command; `lab up --no-cluster`). */
export const noHooks: LabHooks = {
  init: async () => {},
  apply: async () => {},
  waitForDemo: async () => {},
};
