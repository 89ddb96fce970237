import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  describeSpec,
  fullNodes,
  loadClusterConfig,
  managerPolicy,
  membershipOf,
  parseClusterConfig,
  timingOf,
  votingNodes,
} from '../../../src/cluster/config.ts';
import { UserError } from '../../../src/lib/errors.ts';

const FIXTURES = join(import.meta.dirname, '../../fixtures/cluster');
const THREE = join(FIXTURES, 'three-nodes.yaml');
const WITNESS = join(FIXTURES, 'two-nodes-witness.yaml');
const base = readFileSync(THREE, 'utf8');

/** The error line for `text`, checking it is one line starting with the file name. */
function errorOf(text: string): string {
  try {
    parseClusterConfig(text, 'cluster.yaml');
  } catch (err) {
    assert.ok(err instanceof UserError, String(err));
    assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
    return err.message;
  }
  assert.fail('expected an error');
}

/** Line (1-based) of the first line of `text` containing `needle`. */
function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(needle));
  assert.ok(i >= 0, `${needle} not in text`);
  return i + 1;
}

/** The minimal cluster of three nodes with `vservers` given as YAML lines (indented by 2). */
function cluster(vservers: string, extra = ''): string {
  return [
    'cluster: t',
    'nodes:',
    '  - { name: n1, addresses: [10.0.0.1] }',
    '  - { name: n2, addresses: [10.0.0.2] }',
    '  - { name: n3, addresses: [10.0.0.3] }',
    '  - { name: w, role: witness, addresses: [10.0.0.4] }',
    extra,
    'vservers:',
    vservers,
    '',
  ].join('\n');
}

function vserver(name: string, lines: Record<string, string> = {}): string {
  const fields = {
    template: 'busybox',
    volume: '{ size: 64M, replicas: [n1, n2], port: 7801 }',
    ...lines,
  };
  return [`  ${name}:`, ...Object.entries(fields).map(([k, v]) => `    ${k}: ${v}`)].join('\n');
}

test('the three-node example parses with its defaults', () => {
  const spec = loadClusterConfig(THREE);
  assert.equal(spec.cluster, 'demo');
  assert.equal(spec.tls_dir, '/etc/cvserver/tls');
  assert.equal(spec.state_dir, undefined);
  assert.deepEqual(votingNodes(spec), ['n1', 'n2', 'n3']);
  assert.deepEqual(fullNodes(spec), ['n1', 'n2', 'n3']);
  assert.deepEqual(spec.etcd, {
    endpoints: [],
    client_port: 2379,
    peer_port: 2380,
    heartbeat_ms: 100,
    election_ms: 1000,
  });
  assert.deepEqual(timingOf(spec), {
    leaseTtl: 3,
    loopInterval: 0.5,
    renewTimeout: 0.5,
    fenceMargin: 1,
    guardDeadline: 2.5,
  });
  assert.deepEqual(managerPolicy(spec), {
    max_restarts: 1,
    max_relocations: 1,
    failure_timeout: 300,
    failback: false,
  });
  const demo = spec.vservers.demo!;
  assert.equal(demo.name, 'demo');
  assert.equal(demo.desired, 'started');
  assert.equal(demo.template, 'busybox');
  assert.deepEqual(demo.volume, {
    size: 256 * 1024 * 1024,
    filesystem: 'ext4',
    replicas: ['n1', 'n2', 'n3'],
    port: 7801,
  });
  assert.deepEqual(demo.placement, { preferred: ['n1'], avoid: [], antiAffinity: [] });
  assert.equal(demo.definition.name, 'demo');
  assert.ok(!('rootfs' in demo.definition));
  assert.deepEqual(demo.definition.network, { bridge: 'lan0', addresses: ['10.77.0.100/24'] });
  assert.equal(demo.definition.health_checks[0]?.type, 'http');
  assert.equal(demo.definition.health_checks[0]?.interval, 1000);
  assert.equal(demo.definition.restart.policy, 'no', 'the manager restarts, not the supervisor');
  assert.equal(demo.definition.stop.timeout, 10_000);
});

test('two full nodes and a witness: the witness votes but holds no data', () => {
  const spec = loadClusterConfig(WITNESS);
  assert.deepEqual(votingNodes(spec), ['n1', 'n2', 'w']);
  assert.deepEqual(fullNodes(spec), ['n1', 'n2']);
  assert.deepEqual(spec.vservers.demo?.volume.replicas, ['n1', 'n2']);
});

test('describeSpec: a line per node and per vserver', () => {
  const lines = describeSpec(loadClusterConfig(THREE));
  assert.match(lines[0]!, /^cluster demo: 3 nodes, etcd members on n1, n2, n3/);
  assert.match(lines[1]!, /stops its vservers 2s after .* guard at 2.5s/);
  assert.ok(lines.includes('node n2 (full) 10.77.0.12'));
  assert.ok(
    lines.includes(
      'vserver demo: started, template busybox, 10.77.0.100/24 on lan0, volume 256M ext4 on n1, n2, n3 port 7801, preferred n1',
    ),
  );
  assert.equal(lines.length, 2 + 3 + 1);
});

test('explicit timing, policy, etcd and tls_dir are kept', () => {
  const text = cluster(
    vserver('a'),
    [
      'tls_dir: /srv/tls',
      'state_dir: /srv/state',
      'etcd: { endpoints: ["https://10.0.0.9:2379"], client_port: 12379, peer_port: 12380 }',
      'timing: { lease_ttl: 5, loop_interval: 1, renew_timeout: 1, fence_margin: 2 }',
      'policy: { max_restarts: 2, max_relocations: 0, failure_timeout: 60, failback: true }',
    ].join('\n'),
  );
  const spec = parseClusterConfig(text, 'c.yaml');
  assert.equal(spec.tls_dir, '/srv/tls');
  assert.equal(spec.state_dir, '/srv/state');
  assert.deepEqual(spec.etcd.endpoints, ['https://10.0.0.9:2379']);
  assert.deepEqual(timingOf(spec), {
    leaseTtl: 5,
    loopInterval: 1,
    renewTimeout: 1,
    fenceMargin: 2,
    guardDeadline: 4,
  });
  assert.deepEqual(managerPolicy(spec), {
    max_restarts: 2,
    max_relocations: 0,
    failure_timeout: 60,
    failback: true,
  });
});

test('a vserver with one replica is allowed; with two and no witness too', () => {
  const one = parseClusterConfig(
    cluster(vserver('a', { volume: '{ size: 64M, replicas: [n3], port: 7801 }' })),
    'c.yaml',
  );
  assert.deepEqual(one.vservers.a?.volume.replicas, ['n3']);
  const text = [
    'cluster: t',
    'nodes:',
    '  - { name: a, addresses: [10.0.0.1] }',
    '  - { name: b, addresses: [10.0.0.2] }',
    '  - { name: c, addresses: [10.0.0.3] }',
    'vservers:',
    '  v: { template: debian, volume: { size: 1G, replicas: [a, b], port: 7000 } }',
  ].join('\n');
  assert.deepEqual(parseClusterConfig(text, 'c.yaml').vservers.v?.volume.replicas, ['a', 'b']);
});

test('unknown field: its file, line and field', () => {
  const text = base.replace('    template: busybox', '    template: busybox\n    colour: red');
  assert.equal(
    errorOf(text),
    `cluster.yaml:${lineOf(text, 'colour')}:13: vservers.demo: unknown key "colour"`,
  );
});

test('unsafe timing is refused with the rule it breaks', () => {
  const text = `${base}timing:\n  lease_ttl: 2\n  fence_margin: 1.5\n`;
  const msg = errorOf(text);
  assert.match(
    msg,
    new RegExp(
      `^cluster\\.yaml:${lineOf(text, 'lease_ttl')}:3: timing: unsafe: loop_interval \\+ 2 × renew_timeout \\+ fence_margin = 0\\.5 \\+ 2 × 0\\.5 \\+ 1\\.5 = 3s exceeds lease_ttl 2s`,
    ),
  );
  assert.match(
    errorOf(
      cluster(
        vserver('a'),
        'timing: { lease_ttl: 1, loop_interval: 0.1, renew_timeout: 0.1, fence_margin: 0.2 }',
      ),
    ),
    /timing\.lease_ttl: 1s is below etcd's minimum lease TTL \(2s: 1\.5 × election_ms 1000\)/,
  );
  assert.match(
    errorOf(cluster(vserver('a'), 'timing: { lease_ttl: 10, loop_interval: 2, fence_margin: 3 }')),
    /timing\.fence_margin: unsafe: 3s is less than 2 × loop_interval \(4s\)/,
  );
  assert.match(
    errorOf(cluster(vserver('a'), 'timing: { lease_ttl: 2.5 }')),
    /timing\.lease_ttl: expected whole seconds/,
  );
  assert.match(
    errorOf(cluster(vserver('a'), 'timing: { loop_interval: 0 }')),
    /timing\.loop_interval: expected a positive/,
  );
});

test('unknown node in replicas points at the entry', () => {
  const text = cluster(vserver('a', { volume: '{ size: 64M, replicas: [n1, n9], port: 7801 }' }));
  assert.equal(
    errorOf(text),
    `cluster.yaml:${lineOf(text, 'n9')}:41: vservers.a.volume.replicas.1: unknown node "n9" (nodes: n1, n2, n3, w)`,
  );
});

test('a witness cannot hold a replica', () => {
  assert.match(
    errorOf(cluster(vserver('a', { volume: '{ size: 64M, replicas: [n1, w], port: 7801 }' }))),
    /vservers\.a\.volume\.replicas\.1: "w" is a witness: it stores no data/,
  );
});

test('more than 3 replicas are refused; a node twice too', () => {
  assert.match(
    errorOf(cluster(vserver('a', { volume: '{ size: 64M, replicas: [n1, n2, n3, n1], port: 7801 }' }))),
    /vservers\.a\.volume\.replicas: at most 3 replicas/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { volume: '{ size: 64M, replicas: [n1, n1], port: 7801 }' }))),
    /vservers\.a\.volume\.replicas\.1: "n1" is listed twice/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { volume: '{ size: 64M, replicas: [], port: 7801 }' }))),
    /vservers\.a\.volume\.replicas: expected at least one replica/,
  );
});

test('a volume port used twice, or by etcd, is refused', () => {
  const text = cluster(`${vserver('a')}\n${vserver('b')}`);
  assert.equal(
    errorOf(text),
    `cluster.yaml:${lineOf(text, '  b:') + 2}:52: vservers.b.volume.port: port 7801 is already used by vservers.a.volume.port (each volume needs its own port)`,
  );
  assert.match(
    errorOf(cluster(vserver('a', { volume: '{ size: 64M, replicas: [n1], port: 2380 }' }))),
    /vservers\.a\.volume\.port: port 2380 is already used by etcd\.peer_port/,
  );
});

test('anti_affinity naming an unknown vserver, or itself', () => {
  assert.match(
    errorOf(cluster(vserver('a', { placement: '{ anti_affinity: [web] }' }))),
    /^cluster\.yaml:\d+:\d+: vservers\.a\.placement\.anti_affinity\.0: unknown vserver "web" \(vservers: a\)$/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { placement: '{ anti_affinity: [a] }' }))),
    /anti_affinity\.0: a vserver cannot avoid itself/,
  );
  const ok = parseClusterConfig(
    cluster(
      `${vserver('a', { placement: '{ anti_affinity: [b] }' })}\n${vserver('b', { volume: '{ size: 64M, replicas: [n2, n3], port: 7802 }' })}`,
    ),
    'c.yaml',
  );
  assert.deepEqual(ok.vservers.a?.placement.antiAffinity, ['b']);
});

test('preferred and avoid name known nodes; preferred holds a replica', () => {
  assert.match(
    errorOf(cluster(vserver('a', { placement: '{ preferred: [n7] }' }))),
    /vservers\.a\.placement\.preferred\.0: unknown node "n7"/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { placement: '{ preferred: [n3] }' }))),
    /vservers\.a\.placement\.preferred\.0: "n3" holds no replica of this vserver's volume/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { placement: '{ avoid: [x] }' }))),
    /vservers\.a\.placement\.avoid\.0: unknown node "x"/,
  );
});

test('vserver network addresses are unique across vservers and nodes', () => {
  const net = (ip: string) => `{ bridge: lan0, addresses: [${ip}/24] }`;
  assert.match(
    errorOf(
      cluster(
        `${vserver('a', { network: net('10.0.0.50') })}\n${vserver('b', { network: net('10.0.0.50'), volume: '{ size: 64M, replicas: [n3], port: 7802 }' })}`,
      ),
    ),
    /vservers\.b\.network\.addresses\.0: 10\.0\.0\.50 is already the address of vserver "a"/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { network: net('10.0.0.2') }))),
    /vservers\.a\.network\.addresses\.0: 10\.0\.0\.2 is already the address of node "n2"/,
  );
  assert.match(
    errorOf(
      cluster(vserver('a', { network: '{ bridge: lan0, addresses: [10.0.0.50/24], gateway: 10.1.0.1 }' })),
    ),
    /vservers\.a\.network\.gateway: 10\.1\.0\.1 is not in the subnet/,
  );
});

test('names: vservers as in vserver definitions, nodes [a-z][a-z0-9-]{0,30}', () => {
  assert.match(errorOf(cluster(vserver('Web'))), /vservers\.Web: expected a vserver name/);
  const badNode = cluster(vserver('a')).replace('name: n3', 'name: 3n');
  assert.match(errorOf(badNode), /nodes\.2\.name: expected a node name/);
  const longNode = cluster(vserver('a')).replace('name: n3', `name: n${'x'.repeat(31)}`);
  assert.match(errorOf(longNode), /nodes\.2\.name: expected a node name/);
  const dup = cluster(vserver('a')).replace('name: n3', 'name: n2');
  assert.match(errorOf(dup), /nodes\.2\.name: node "n2" is listed twice/);
  const dupAddr = cluster(vserver('a')).replace('10.0.0.3', '10.0.0.1');
  assert.match(errorOf(dupAddr), /nodes\.2\.addresses\.0: 10\.0\.0\.1 is already an address of node "n1"/);
});

test('two voting nodes without external etcd are refused; with it they are fine', () => {
  const two = [
    'cluster: t',
    'nodes:',
    '  - { name: a, addresses: [10.0.0.1] }',
    '  - { name: b, addresses: [10.0.0.2] }',
  ].join('\n');
  assert.match(errorOf(two), /^cluster\.yaml:3:3: nodes: two voting nodes cannot fail over/);
  const spec = parseClusterConfig(`${two}\netcd: { endpoints: ["https://10.0.0.9:2379"] }\n`, 'c.yaml');
  assert.deepEqual(votingNodes(spec), ['a', 'b']);
  assert.match(
    errorOf('cluster: t\nnodes:\n  - { name: w, role: witness, addresses: [10.0.0.1] }\n'),
    /nodes: expected at least one node with role full/,
  );
});

test('field errors from the embedded vserver definition keep their paths', () => {
  assert.match(
    errorOf(cluster(vserver('a', { limits: '{ memory: 12XB }' }))),
    /vservers\.a\.limits\.memory: "12XB" is not a size/,
  );
  assert.match(
    errorOf(cluster(vserver('a', { volume: '{ size: 1M, replicas: [n1], port: 7801 }' }))),
    /vservers\.a\.volume\.size: expected at least 16M/,
  );
  assert.match(errorOf(cluster(vserver('a', { template: 'alpine' }))), /vservers\.a\.template: /);
  assert.match(errorOf(cluster(vserver('a', { restart: '{ policy: no }' }))), /unknown key "restart"/);
  assert.match(
    errorOf(cluster(vserver('a'), 'etcd: { endpoints: ["http://10.0.0.9:2379"] }')),
    /etcd\.endpoints\.0: expected an https:\/\/ URL/,
  );
});

test('membership: defaults, explicit values, and dead_after_ms below 3 intervals refused', () => {
  assert.deepEqual(membershipOf(loadClusterConfig(THREE)), {
    port: 5405,
    intervalMs: 250,
    deadAfterMs: 1000,
  });
  const explicit = parseClusterConfig(
    cluster('  {}', 'membership: { port: 6000, interval_ms: 100, dead_after_ms: 500 }'),
    'cluster.yaml',
  );
  assert.deepEqual(membershipOf(explicit), { port: 6000, intervalMs: 100, deadAfterMs: 500 });
  const text = cluster('  {}', 'membership:\n  interval_ms: 500\n  dead_after_ms: 1000');
  assert.equal(
    errorOf(text),
    `cluster.yaml:${lineOf(text, 'dead_after_ms')}:18: membership.dead_after_ms: 1000 is less than 3 × interval_ms (1500): one or two lost heartbeats would take a link down`,
  );
  assert.match(errorOf(cluster('  {}', 'membership: { colour: red }')), /membership: unknown key "colour"/);
  const nine = cluster('  {}').replace(
    '[10.0.0.1]',
    `[${Array.from({ length: 9 }, (_, i) => `10.${i}.0.1`).join(', ')}]`,
  );
  assert.match(errorOf(nine), /nodes\.0\.addresses: at most 8 addresses \(links\) per node/);
});

test('invalid YAML and a missing file', () => {
  assert.match(errorOf('cluster: [t\n'), /^cluster\.yaml:\d+:\d+: invalid YAML/);
  assert.throws(() => loadClusterConfig('/nonexistent/cluster.yaml'), /no such file/);
});
