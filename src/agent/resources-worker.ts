/**
 * The worker thread that does the node's resource work (volumes, vservers). Much of it is synchronous
 * (mkfs, crun, ip, copying a template): run on the agent's main thread it would stall lease renewals and
 * the fence timer for seconds. Here it stalls only this thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { createNodeResources, type NodeResources } from './resources.ts';

export interface ResourceCall {
  id: number;
  method: keyof NodeResources;
  args: unknown[];
}

export type ResourceReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string };

// Only inside a worker (scripts/warm-compile-cache imports every module on the main thread).
if (parentPort) {
  const { stateDir, node } = workerData as { stateDir: string; node: string };
  const resources = createNodeResources({
    stateDir,
    log: createLogger('agent', { node, thread: 'resources' }),
  });
  const port = parentPort;

  port.on('message', (call: ResourceCall) => {
    const fn = resources[call.method] as (...a: unknown[]) => Promise<unknown>;
    Promise.resolve()
      .then(() => fn(...call.args))
      .then(
        (result) =>
          port.postMessage({ id: call.id, ok: true, result: result ?? null } satisfies ResourceReply),
        (err: unknown) =>
          port.postMessage({ id: call.id, ok: false, error: errorMessage(err) } satisfies ResourceReply),
      );
  });
}
