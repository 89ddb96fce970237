import { join } from 'node:path';

/**
 * Where cvserver keeps its state on a node. `CVSERVER_STATE_DIR` overrides the default so tests
 * (and several simulated nodes on one machine) each get their own tree.
 */
export function stateDir(): string {
  return process.env.CVSERVER_STATE_DIR ?? '/var/lib/cvserver';
}

export function volumesDir(): string {
  return join(stateDir(), 'volumes');
}

export function volumeDir(name: string): string {
  return join(volumesDir(), name);
}
