/**
 * A node joining a running cluster (after `cvserver node add` made its etcd member a learner): its
 * member starts with the cluster's current members as the initial cluster and `existing`, and is
 * promoted to a voter once etcd says it has caught up with the leader.
 */
import { errorMessage } from '../../lib/errors.ts';
import type { EtcdClient } from '../etcd/client.ts';
import { joiningCluster } from './plan.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The initial cluster for this node's new member, asked of the others (retried until `stopped()`). */
export async function initialClusterForJoin(
  client: EtcdClient,
  node: string,
  peerUrl: string,
  stopped: () => boolean,
  note: (what: string) => void,
): Promise<{ name: string; peerUrl: string }[] | undefined> {
  while (!stopped()) {
    try {
      const r = joiningCluster(await client.memberList(), node, peerUrl);
      if (!('ok' in r)) return r;
      note(r.refusal);
    } catch (err) {
      note(`joining: cannot list the etcd members: ${errorMessage(err)}`);
    }
    await sleep(1000);
  }
  return undefined;
}

/**
 * Promotes this node's learner once it is in sync (etcd refuses before); returns when it votes, or
 * when it is no member at all (removed meanwhile) or `stopped()`. `promoted`: called once, when this
 * call promoted it.
 */
export async function promoteWhenCaughtUp(
  client: EtcdClient,
  peerUrl: string,
  stopped: () => boolean,
  note: (what: string) => void,
  promoted: () => void,
): Promise<void> {
  while (!stopped()) {
    let learner = false;
    try {
      const me = (await client.memberList()).find((m) => m.peerUrls.includes(peerUrl));
      if (!me?.isLearner) return;
      learner = true;
      await client.memberPromote(me.id);
      promoted();
      return;
    } catch (err) {
      const text = errorMessage(err);
      // Listing fails quietly while the cluster's members start (a voter learns it is one once listed);
      // "can only promote a learner member which is in sync with leader" is a learner's normal wait.
      if (learner && !/in sync/.test(text)) note(`etcd learner not promoted yet: ${text}`);
    }
    await sleep(1000);
  }
}
