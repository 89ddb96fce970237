import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseClusterConfig } from '../../../src/cluster/config.ts';
import { labClusterYaml } from '../../../src/lab/demo.ts';
import { nodeCommandLine, planLab, sameShape } from '../../../src/lab/layout.ts';
import { vserverCgroupParent } from '../../../src/lab/processes.ts';
import { mountsUnder, parseMountinfo } from '../../../src/lab/storage.ts';
import { cgroupsPath } from '../../../src/vserver/store.ts';

test('planLab: three nodes by default, names and addresses', () => {
  const lab = planLab();
  assert.equal(lab.dir, '/var/lib/cvserver-lab/lab');
  assert.equal(lab.hub, 'cvl-lab-hub');
  assert.deepEqual(lab.hostInterfaces, ['cvllabh']);
  assert.deepEqual(lab.hostAddresses, ['10.77.0.254']);
  assert.deepEqual(
    lab.nodes.map((n) => [n.name, n.role, n.namespace, n.addresses.join(), n.stateDir]),
    [
      ['n1', 'full', 'cvl-lab-n1', '10.77.0.11', '/var/lib/cvserver-lab/lab/nodes/n1'],
      ['n2', 'full', 'cvl-lab-n2', '10.77.0.12', '/var/lib/cvserver-lab/lab/nodes/n2'],
      ['n3', 'full', 'cvl-lab-n3', '10.77.0.13', '/var/lib/cvserver-lab/lab/nodes/n3'],
    ],
  );
  assert.equal(lab.demo.url, 'http://10.77.0.100/');
});

test('planLab: two full nodes and a witness, two links', () => {
  const lab = planLab({ name: 'w2', nodes: 2, witness: true, links: 2, subnet: '10.77.0' });
  assert.deepEqual(lab.subnets, ['10.77.0', '10.78.0']);
  assert.deepEqual(lab.hostInterfaces, ['cvlw2h', 'cvlw2h1']);
  assert.deepEqual(
    lab.nodes.map((n) => [n.name, n.role, n.addresses.join(), n.hubInterfaces.join()]),
    [
      ['n1', 'full', '10.77.0.11,10.78.0.11', 'n1-l0,n1-l1'],
      ['n2', 'full', '10.77.0.12,10.78.0.12', 'n2-l0,n2-l1'],
      ['w', 'witness', '10.77.0.13,10.78.0.13', 'w-l0,w-l1'],
    ],
  );
});

test('planLab: refuses bad names, subnets and counts', () => {
  assert.throws(() => planLab({ name: 'much-too-long' }), /--name/);
  assert.throws(() => planLab({ name: 'Lab' }), /--name/);
  assert.throws(() => planLab({ subnet: '10.77' }), /--subnet/);
  assert.throws(() => planLab({ subnet: '10.777.0' }), /--subnet/);
  assert.throws(() => planLab({ nodes: 3, witness: true }), /--witness goes with --nodes 2/);
  assert.throws(() => planLab({ nodes: 0 }), /--nodes/);
  for (const l of [planLab({ name: 'abcdefghij', links: 2 })])
    for (const dev of [...l.hostInterfaces, ...l.nodes.flatMap((n) => n.hubInterfaces)])
      assert.ok(dev.length <= 15, dev);
});

test('sameShape and the node command line', () => {
  const a = planLab({ name: 'x' });
  assert.ok(sameShape(a, planLab({ name: 'x' })));
  assert.ok(!sameShape(a, planLab({ name: 'x', nodes: 2, witness: true })));
  assert.ok(!sameShape(a, planLab({ name: 'x', subnet: '10.1.2' })));
  assert.deepEqual(nodeCommandLine(a, a.nodes[1]!, '/opt/cvs'), [
    '/opt/cvs/bin/cvserver',
    'agent',
    '--config',
    '/var/lib/cvserver-lab/x/cluster.yaml',
    '--node',
    'n2',
  ]);
});

test('the cgroup parent the lab kills is the one vservers of that state dir get', () => {
  const saved = process.env.CVSERVER_STATE_DIR;
  try {
    process.env.CVSERVER_STATE_DIR = '/var/lib/cvserver-lab/lab/nodes/n1';
    assert.equal(cgroupsPath('demo'), `/${vserverCgroupParent('/var/lib/cvserver-lab/lab/nodes/n1')}/demo`);
  } finally {
    if (saved === undefined) delete process.env.CVSERVER_STATE_DIR;
    else process.env.CVSERVER_STATE_DIR = saved;
  }
});

test('mountinfo: mounts under a dir, deepest first, escapes decoded', () => {
  const info = [
    '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
    '90 22 7:0 / /var/lib/l/nodes/n1/mnt/demo rw,relatime shared:2 - ext4 /dev/loop0 rw',
    '91 22 0:50 / /var/lib/l/nodes/n1/volumes/demo/fuse rw - fuse cvserver rw',
    '92 22 0:51 / /var/lib/l/nodes/n10/mnt/a\\040b rw - tmpfs tmpfs rw',
  ].join('\n');
  assert.equal(parseMountinfo(info)[3]!.point, '/var/lib/l/nodes/n10/mnt/a b');
  assert.deepEqual(
    mountsUnder('/var/lib/l/nodes/n1', info).map((m) => [m.point, m.type]),
    [
      ['/var/lib/l/nodes/n1/volumes/demo/fuse', 'fuse'],
      ['/var/lib/l/nodes/n1/mnt/demo', 'ext4'],
    ],
  );
});

test('labClusterYaml is a valid cluster.yaml: nodes, roles, the demo on the full nodes', () => {
  for (const lab of [planLab(), planLab({ nodes: 2, witness: true })]) {
    const spec = parseClusterConfig(labClusterYaml(lab), 'cluster.yaml');
    assert.deepEqual(
      spec.nodes.map((n) => [n.name, n.role, n.addresses]),
      lab.nodes.map((n) => [n.name, n.role, n.addresses]),
    );
    const demo = spec.vservers.demo;
    assert.ok(demo);
    assert.deepEqual(
      demo.volume.replicas,
      lab.nodes.filter((n) => n.role === 'full').map((n) => n.name),
    );
    assert.deepEqual(demo.definition.network?.addresses, [`${lab.demo.address}/24`]);
    assert.equal(demo.definition.network?.bridge, 'lan0');
  }
});
