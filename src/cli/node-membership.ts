/**
 * `cvserver node remove NODE` and `cvserver node add NODE --address A[,B...]`: the cluster's
 * membership, from any node (through its agent). The stored cluster.yaml stays the source of truth:
 * a removed node is marked removed there (its entry kept, for a later add), a new node's entry is
 * appended to it. See docs/agent.md (membership).
 */
import type { Command } from 'commander';
import type { AdditionAnswer, RemovalAnswer } from '../agent/membership/change.ts';
import type { ClusterStatus } from '../agent/status.ts';
import { UserError } from '../lib/errors.ts';
import { askAgent, operatorName } from './agent-client.ts';
import { emit } from './output.ts';
import { waitMovedOff } from './wait-moved.ts';

/** A membership change talks to etcd's members one by one: longer than the socket's default. */
const ASK_MS = 30_000;

function positiveSeconds(text: string): number {
  const s = Number(text);
  if (!(s > 0)) throw new UserError(`--timeout: expected a positive number of seconds, got "${text}"`);
  return s;
}

export function registerMembershipCommands(node: Command): void {
  node
    .command('remove <node>')
    .description(
      "take a node out of the cluster: refused (nothing changed) while it would lose etcd's quorum or the last " +
        'up-to-date replica of a volume; else its vservers move off one at a time (standby), its replicas leave ' +
        "the volumes' peers, its etcd member is removed, and its agent stands down",
    )
    .option(
      '--timeout <seconds>',
      'give up moving its vservers off after this long (it stays in standby)',
      '600',
    )
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { timeout: string; json?: boolean }) => {
      const timeoutS = positiveSeconds(o.timeout);
      const by = operatorName();
      const began = Date.now();
      const plan = (await askAgent(
        { op: 'node-remove', node: name, commit: false, by },
        ASK_MS,
      )) as RemovalAnswer;
      const say = (line: string) => {
        if (!o.json) process.stderr.write(`${line}\n`);
      };
      say(`${name}: removal checked (${plan.steps.join(', ')})`);
      if (plan.steps.includes('standby')) await askAgent({ op: 'standby', node: name, on: true, by });
      let moved: string[] = [];
      if (plan.running.length) {
        say(`${name} in standby: moving ${plan.running.join(', ')} off it, one at a time`);
        moved = (await waitMovedOff(name, plan.running, timeoutS, !!o.json)).moved;
      }
      let done: RemovalAnswer;
      try {
        done = (await askAgent({ op: 'node-remove', node: name, commit: true, by }, ASK_MS)) as RemovalAnswer;
      } catch (err) {
        if (err instanceof UserError && !/marked removed/.test(err.message))
          throw new UserError(
            `${err.message}; ${name} stays in standby (run the removal again, or cvserver node unstandby ${name})`,
          );
        throw err;
      }
      const seconds = (Date.now() - began) / 1000;
      emit(!!o.json, { node: name, removed: true, moved, steps: done.done, seconds }, () =>
        [
          `${name} is removed from the cluster${moved.length ? ` (moved ${moved.join(', ')})` : ''} in ${seconds.toFixed(1)} s: ${done.done.join(', ')}`,
          `its agent stands down; its entry stays in the stored cluster.yaml, marked removed (bring it back: cvserver node add ${name} --address ...)`,
        ].join('\n'),
      );
    });

  node
    .command('add <node>')
    .description(
      'add a node to the cluster: its etcd member as a learner (promoted by its agent once caught up), its entry in the ' +
        "stored cluster.yaml (appended, or a removed node's taken back with its replicas); then start its agent " +
        'with --initial-cluster-state existing and an empty state dir',
    )
    .requiredOption('--address <addresses>', 'its addresses, one per link (the first: etcd and replication)')
    .option('--witness', 'a witness: votes in etcd and breaks ties, stores no data')
    .option('--wait', 'return once its agent is up (its lease alive) and its replicas are up to date')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '600')
    .option('--json', 'machine-readable output')
    .action(
      async (
        name: string,
        o: { address: string; witness?: boolean; wait?: boolean; timeout: string; json?: boolean },
      ) => {
        const timeoutS = positiveSeconds(o.timeout);
        const addresses = o.address
          .split(',')
          .map((a) => a.trim())
          .filter(Boolean);
        const r = (await askAgent(
          {
            op: 'node-add',
            node: name,
            addresses,
            role: o.witness ? 'witness' : 'full',
            by: operatorName(),
          },
          ASK_MS,
        )) as AdditionAnswer;
        if (!o.wait)
          return emit(!!o.json, r, () =>
            [
              `${name} is added (${r.steps.join(', ')})${r.memberId ? `: etcd member ${r.memberId}, a learner until its agent has caught up` : ''}`,
              `now start its agent, on ${name}, with an empty state dir: ${r.start}`,
            ].join('\n'),
          );
        const seconds = await waitJoined(name, timeoutS, !!o.json);
        emit(
          !!o.json,
          { ...r, joined: true, seconds },
          () => `${name} has joined: lease alive, replicas up to date`,
        );
      },
    );
}

/** Until the node's lease is alive and each replica it holds is up to date. */
async function waitJoined(node: string, timeoutS: number, quiet: boolean): Promise<number> {
  const began = Date.now();
  let last = '';
  for (;;) {
    const s = (await askAgent({ op: 'status', brief: true })) as ClusterStatus;
    const alive = s.nodes.find((n) => n.name === node)?.lease === 'alive';
    const behind = s.vservers.filter((v) => v.replicas.some((r) => r.node === node && !r.upToDate));
    const now = !alive
      ? 'waiting for its agent (lease)'
      : behind.length
        ? `resyncing ${behind.map((v) => v.name).join(', ')}`
        : '';
    if (!quiet && now !== last)
      process.stderr.write(`${((Date.now() - began) / 1000).toFixed(1)}s ${now || 'joined'}\n`);
    last = now;
    if (alive && behind.length === 0) return (Date.now() - began) / 1000;
    if (Date.now() - began > timeoutS * 1000)
      throw new UserError(`${node} not joined after ${timeoutS} s: ${now}`);
    await new Promise((res) => setTimeout(res, 500));
  }
}
