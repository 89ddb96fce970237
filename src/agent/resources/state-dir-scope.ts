/**
 * The volume and vserver libraries find their files through `stateDir()`, i.e. the process's
 * CVSERVER_STATE_DIR (and hand it on to the daemons and supervisors they spawn). An agent has one
 * state dir, so its operations run side by side; a test that plays two nodes in one process has two,
 * and an operation of one must never see the other's directory. So: operations on the same state dir
 * run concurrently, and a switch to another dir waits until the current dir has no operation left.
 */
let current: string | undefined;
let active = 0;
const waiting: Array<() => void> = [];

async function enter(dir: string): Promise<void> {
  while (active > 0 && current !== dir) await new Promise<void>((resolve) => waiting.push(resolve));
  if (active === 0) {
    current = dir;
    process.env.CVSERVER_STATE_DIR = dir;
  }
  active++;
}

function leave(): void {
  active--;
  if (active === 0) for (const wake of waiting.splice(0)) wake();
}

export async function inStateDir<T>(dir: string, fn: () => Promise<T> | T): Promise<T> {
  await enter(dir);
  try {
    return await fn();
  } finally {
    leave();
  }
}
