import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withNodeEntry } from '../../../src/agent/membership/change.ts';
import {
  type AdditionInput,
  joiningCluster,
  type MemberView,
  planAddition,
  planRemoval,
  type RemovalInput,
  type StoredNode,
} from '../../../src/agent/membership/plan.ts';
import { parseClusterConfig, withoutRemoved } from '../../../src/cluster/config.ts';

const node = (name: string, o: Partial<StoredNode> = {}): StoredNode => ({
  name,
  role: 'full',
  addresses: [`10.0.0.${name.slice(1)}`],
  removed: false,
  ...o,
});
const member = (name: string, o: Partial<MemberView> = {}): MemberView => ({
  id: String(100 + Number(name.slice(1))),
  name,
  peerUrls: [`https://10.0.0.${name.slice(1)}:2380`],
  isLearner: false,
  up: true,
  leader: false,
  ...o,
});
const three = [node('n1'), node('n2'), node('n3')];
const removal = (o: Partial<RemovalInput> = {}): RemovalInput => ({
  node: 'n3',
  asker: 'n1',
  nodes: three,
  members: [member('n1'), member('n2'), member('n3')],
  volumes: [{ vserver: 'demo', replicas: ['n1', 'n2', 'n3'], upToDate: ['n1', 'n2', 'n3'] }],
  running: [],
  ...o,
});

test('node remove: the leadership goes to another voter that answers', () => {
  const p = planRemoval(
    removal({
      members: [member('n1', { up: false }), member('n2'), member('n3', { leader: true }), member('n4')],
      nodes: [...three, node('n4')],
      volumes: [],
    }),
  );
  assert.ok(p.ok);
  assert.equal(p.leaderTo?.name, 'n2');
  assert.equal(p.member?.name, 'n3');
});

test('node remove: refusals and steps', () => {
  const cases: { name: string; in: RemovalInput; want: string }[] = [
    { name: 'idle node, all up', in: removal(), want: 'standby, mark-removed, member-remove' },
    {
      name: 'its vservers move off first',
      in: removal({ running: ['demo'] }),
      want: 'standby, wait-moved, mark-removed, member-remove',
    },
    {
      name: 'no etcd member of its own (external etcd)',
      in: removal({ members: null }),
      want: 'standby, mark-removed',
    },
    {
      name: 'a learner leaves without a quorum check',
      in: removal({
        members: [member('n1'), member('n2', { up: false }), member('n3', { isLearner: true })],
        volumes: [],
      }),
      want: 'standby, mark-removed, member-remove',
    },
    {
      name: 'its member leads etcd: the leadership moves first, to a voter that answers',
      in: removal({
        members: [member('n1', { isLearner: true }), member('n2'), member('n3', { leader: true })],
        volumes: [],
      }),
      want: 'standby, move-leader, mark-removed, member-remove',
    },
    { name: 'unknown node', in: removal({ node: 'n9' }), want: 'refused: no node named "n9"' },
    {
      name: 'already removed',
      in: removal({
        nodes: [node('n1'), node('n2'), node('n3', { removed: true })],
        members: [member('n1'), member('n2')],
      }),
      want: 'refused: n3 is already removed',
    },
    {
      name: 'removed, its member still there (an interrupted removal): the member goes',
      in: removal({ nodes: [node('n1'), node('n2'), node('n3', { removed: true })] }),
      want: 'member-remove',
    },
    {
      name: 'removed, its member still there, but that would lose the quorum',
      in: removal({
        nodes: [node('n1'), node('n2'), node('n3', { removed: true })],
        members: [member('n1'), member('n2', { up: false }), member('n3')],
      }),
      want: "refused: removing n3 would lose etcd's quorum",
    },
    {
      name: 'asked of its own agent',
      in: removal({ asker: 'n3' }),
      want: 'refused: run it from another node',
    },
    {
      name: 'quorum: the other two voters, one down',
      in: removal({ members: [member('n1'), member('n2', { up: false }), member('n3')] }),
      want: "refused: removing n3 would lose etcd's quorum",
    },
    {
      name: 'quorum: five voters, two of the four left down: 2 of 4 is no majority',
      in: removal({
        nodes: [...three, node('n4'), node('n5')],
        members: [
          member('n1'),
          member('n2'),
          member('n3'),
          member('n4', { up: false }),
          member('n5', { up: false }),
        ],
        volumes: [],
      }),
      want: "refused: removing n3 would lose etcd's quorum",
    },
    {
      name: 'quorum: the removed node itself down does not matter',
      in: removal({ members: [member('n1'), member('n2'), member('n3', { up: false })], volumes: [] }),
      want: 'standby, mark-removed, member-remove',
    },
    {
      name: 'the last voter',
      in: removal({ nodes: [node('n1'), node('n3')], members: [member('n3')], asker: 'n1', volumes: [] }),
      want: "refused: n3 holds etcd's only voting member",
    },
    {
      name: 'the last up-to-date replica',
      in: removal({
        volumes: [{ vserver: 'demo', replicas: ['n1', 'n2', 'n3'], upToDate: ['n3'] }],
      }),
      want: "refused: n3 holds the last up-to-date replica of demo's volume (its other replicas n1, n2",
    },
    {
      name: 'the only replica',
      in: removal({ volumes: [{ vserver: 'logs', replicas: ['n3'], upToDate: ['n3'] }] }),
      want: "refused: n3 holds the last up-to-date replica of logs's volume (it has no other replica)",
    },
    {
      name: 'another volume without it is not its concern',
      in: removal({ volumes: [{ vserver: 'web', replicas: ['n1', 'n2'], upToDate: [] }] }),
      want: 'standby, mark-removed, member-remove',
    },
    {
      name: 'the last full node (a witness stays)',
      in: removal({
        node: 'n1',
        asker: 'w',
        nodes: [node('n1'), node('w', { role: 'witness', addresses: ['10.0.0.9'] })],
        members: null,
        volumes: [],
      }),
      want: 'refused: n1 is the last node that can run vservers',
    },
  ];
  for (const c of cases) {
    const p = planRemoval(c.in);
    const got = p.ok ? p.steps.join(', ') : `refused: ${p.refusal}`;
    assert.ok(got.startsWith(c.want), `${c.name}: got "${got}", want "${c.want}..."`);
  }
});

const addition = (o: Partial<AdditionInput> = {}): AdditionInput => ({
  node: 'n3',
  addresses: ['10.0.0.3'],
  role: 'full',
  nodes: [node('n1'), node('n2'), node('n3', { removed: true })],
  members: [member('n1'), member('n2')],
  peerUrl: 'https://10.0.0.3:2380',
  ...o,
});

test('node add: refusals and steps', () => {
  const cases: { name: string; in: AdditionInput; want: string }[] = [
    { name: 'a removed node comes back', in: addition(), want: 'member-add-learner, unmark-removed' },
    {
      name: 'a new node',
      in: addition({ node: 'n4', addresses: ['10.0.0.4'], peerUrl: 'https://10.0.0.4:2380' }),
      want: 'member-add-learner, append-node',
    },
    {
      name: 'a learner from an unfinished add is kept',
      in: addition({
        members: [member('n1'), member('n2'), member('n3', { name: '', isLearner: true, up: false })],
      }),
      want: 'unmark-removed',
    },
    { name: 'external etcd', in: addition({ members: null }), want: 'unmark-removed' },
    { name: 'a bad name', in: addition({ node: 'N3' }), want: 'refused: "N3": expected a node name' },
    { name: 'no address', in: addition({ addresses: [] }), want: 'refused: --address' },
    {
      name: 'already a node',
      in: addition({ nodes: three }),
      want: 'refused: n3 is already a node of the cluster',
    },
    {
      name: 'back at other addresses',
      in: addition({ addresses: ['10.0.0.33'] }),
      want: 'refused: n3 was removed at 10.0.0.3',
    },
    {
      name: 'back as a witness',
      in: addition({ role: 'witness' }),
      want: 'refused: n3 was a full node',
    },
    {
      name: "another node's address",
      in: addition({ node: 'n4', addresses: ['10.0.0.2'], peerUrl: 'https://10.0.0.2:2380' }),
      want: 'refused: 10.0.0.2 is an address of node n2',
    },
    {
      name: 'etcd still has a member of that name',
      in: addition({
        members: [member('n1'), member('n2'), member('n3', { peerUrls: ['https://10.0.0.9:2380'] })],
      }),
      want: 'refused: etcd still has a member named n3',
    },
    {
      name: "its peer URL is another member's",
      in: addition({
        node: 'n4',
        addresses: ['10.0.0.4'],
        peerUrl: 'https://10.0.0.4:2380',
        members: [member('n1'), member('n2'), member('n5', { peerUrls: ['https://10.0.0.4:2380'] })],
      }),
      want: 'refused: https://10.0.0.4:2380 is the peer URL of etcd member n5',
    },
  ];
  for (const c of cases) {
    const p = planAddition(c.in);
    const got = p.ok ? p.steps.join(', ') : `refused: ${p.refusal}`;
    assert.ok(got.startsWith(c.want), `${c.name}: got "${got}", want "${c.want}..."`);
  }
});

test('a joining member starts with every member of the cluster, itself named', () => {
  const members = [member('n1'), member('n2'), member('n3', { name: '', isLearner: true })];
  assert.deepEqual(joiningCluster(members, 'n3', 'https://10.0.0.3:2380'), [
    { name: 'n1', peerUrl: 'https://10.0.0.1:2380' },
    { name: 'n2', peerUrl: 'https://10.0.0.2:2380' },
    { name: 'n3', peerUrl: 'https://10.0.0.3:2380' },
  ]);
  const other = member('n4', { name: '', id: '7' });
  const all = joiningCluster([...members, other], 'n3', 'https://10.0.0.3:2380');
  assert.ok(Array.isArray(all));
  assert.deepEqual(all.at(-1), { name: 'unstarted-7', peerUrl: 'https://10.0.0.4:2380' });
  const r = joiningCluster([member('n1')], 'n3', 'https://10.0.0.3:2380');
  assert.ok('ok' in r && /run cvserver node add n3/.test(r.refusal));
});

const yaml = `cluster: c
# the machines
nodes:
  - name: n1
    addresses: [10.0.0.1]
  - name: n2
    addresses: [10.0.0.2]
  - name: n3
    addresses: [10.0.0.3]
vservers:
  demo:
    template: busybox
    volume: { size: 64M, replicas: [n1, n2, n3], port: 7800 }
    placement: { preferred: [n3, n1] }
`;

test('the spec without removed nodes: not a node, not a replica, not preferred', () => {
  const spec = parseClusterConfig(yaml, 'c.yaml');
  const s = withoutRemoved(spec, ['n3']);
  assert.deepEqual(
    s.nodes.map((n) => n.name),
    ['n1', 'n2'],
  );
  assert.deepEqual(s.vservers.demo!.volume.replicas, ['n1', 'n2']);
  assert.deepEqual(s.vservers.demo!.placement.preferred, ['n1']);
  assert.equal(withoutRemoved(spec, []), spec);
});

test('a new node appended to the stored cluster.yaml, comments kept, valid', () => {
  const text = withNodeEntry(yaml, { name: 'n4', role: 'full', addresses: ['10.0.0.4', '10.1.0.4'] });
  assert.match(text, /# the machines/);
  const spec = parseClusterConfig(text, 'c.yaml');
  assert.deepEqual(spec.nodes.at(-1), { name: 'n4', role: 'full', addresses: ['10.0.0.4', '10.1.0.4'] });
  const w = parseClusterConfig(
    withNodeEntry(yaml, { name: 'w', role: 'witness', addresses: ['10.0.0.9'] }),
    'c',
  );
  assert.equal(w.nodes.at(-1)!.role, 'witness');
});
