/**
 * Waits until every vserver that ran on a node runs healthy elsewhere (standby, node remove), with
 * progress on stderr. One being moved has no node for a moment: it is stopped there before it starts
 * on the next. So which ones ran there is asked before the standby is set (`vserversOn`): the manager
 * may have stopped the first one before a status asked afterwards.
 */
export async function vserversOn(node: string): Promise<string[]> {
  const s = (await askAgent({ op: 'status', brief: true })) as ClusterStatus;
  return s.vservers.filter((v) => v.node === node).map((v) => v.name);
}

import type { ClusterStatus } from '../agent/status.ts';
import { UserError } from '../lib/errors.ts';
import { askAgent } from './agent-client.ts';

export async function waitMovedOff(
  node: string,
  moving: string[],
  timeoutS: number,
  quiet: boolean,
): Promise<{ moved: string[]; seconds: number }> {
  const began = Date.now();
  let last = '';
  for (;;) {
    const s = (await askAgent({ op: 'status', brief: true })) as ClusterStatus;
    const left = s.vservers.filter(
      (v) =>
        moving.includes(v.name) &&
        v.desired === 'started' &&
        (v.node === node || v.node === null || v.status !== 'healthy'),
    );
    const now = left
      .map((v) => `${v.name} ${v.status}${v.node && v.node !== node ? ` on ${v.node}` : ''}`)
      .join(', ');
    if (!quiet && now !== last)
      process.stderr.write(
        `${((Date.now() - began) / 1000).toFixed(1)}s still to move: ${now || 'nothing'}\n`,
      );
    last = now;
    if (left.length === 0) return { moved: moving, seconds: (Date.now() - began) / 1000 };
    if (Date.now() - began > timeoutS * 1000)
      throw new UserError(
        `still to move after ${timeoutS} s: ${now} (is there a node to move to? see cvserver events); ${node} stays in standby`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}
