import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { UserError } from '../../../src/lib/errors.ts';
import {
  parsePeerFlag,
  peersInForce,
  planAdjust,
  readReplicationConfig,
  readSecret,
  splitAddress,
} from '../../../src/volume/replication-config.ts';

const dir = mkdtempSync(join(tmpdir(), 'cvs-replcfg-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function configWith(text: string): string {
  const d = mkdtempSync(join(dir, 'v-'));
  writeFileSync(join(d, 'replication.yaml'), text);
  return d;
}

const good = `node: a
listen: 10.0.0.1:7789
secretFile: /etc/cvserver/secret
peers:
  - node: b
    address: 10.0.0.2:7789
  - node: tb
    address: 10.0.0.9:7789
    tiebreaker: true
`;

test('a volume without replication.yaml is local', () => {
  assert.equal(readReplicationConfig(mkdtempSync(join(dir, 'local-'))), undefined);
});

test('a good config gets its defaults', () => {
  const c = readReplicationConfig(configWith(good))!;
  assert.equal(c.quorum, 'suspend-io');
  assert.equal(c.afterSplitBrain, 'disconnect');
  assert.equal(c.peers[0]!.tiebreaker, false);
  assert.equal(c.peers[1]!.tiebreaker, true);
});

test('bad configs name the file, line and field', () => {
  const cases: Array<[string, RegExp]> = [
    [
      good.replace('10.0.0.2:7789', '10.0.0.2'),
      /replication\.yaml:6:\d+: peers\.0\.address: expected HOST:PORT/,
    ],
    [good.replace('listen: 10.0.0.1:7789', 'listen: 10.0.0.1:99999'), /:2:\d+: listen: port must be 1-65535/],
    [`${good}quorum: sometimes\n`, /:10:\d+: quorum: /],
    [`${good}colour: blue\n`, /:10:\d+: .*unknown key "colour"/],
    [good.replace('node: tb', 'node: b'), /peers: node "b" appears twice/],
    [`${good}resyncRate: fast\n`, /resyncRate: .*fast/],
    ['node: [a\n', /replication\.yaml:\d+:\d+: invalid YAML/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => readReplicationConfig(configWith(text)),
      (e: Error) => {
        assert.ok(e instanceof UserError, e.message);
        assert.match(e.message, re);
        return true;
      },
    );
  }
});

test('the secret must be private and long enough', () => {
  const f = join(dir, 'secret');
  writeFileSync(f, 'x'.repeat(32));
  chmodSync(f, 0o644);
  assert.throws(() => readSecret(f), /mode 644 lets others read it/);
  chmodSync(f, 0o600);
  assert.equal(readSecret(f).length, 32);
  writeFileSync(f, 'short\n');
  assert.throws(() => readSecret(f), /5 bytes, expected at least 16/);
  assert.throws(() => readSecret(join(dir, 'missing')), /cannot read \(ENOENT\)/);
});

test('command-line peers and addresses', () => {
  assert.deepEqual(parsePeerFlag('--peer', 'b=10.0.0.2:7789'), { node: 'b', address: '10.0.0.2:7789' });
  assert.throws(
    () => parsePeerFlag('--peer', '10.0.0.2:7789'),
    /--peer "10.0.0.2:7789": expected NODE=HOST:PORT/,
  );
  assert.throws(() => parsePeerFlag('--peer', 'b=host'), /expected NODE=HOST:PORT/);
  assert.deepEqual(splitAddress('[fd00::1]:7789'), { host: 'fd00::1', port: 7789 });
  assert.deepEqual(splitAddress('node2.lan:7000'), { host: 'node2.lan', port: 7000 });
});

test('volume adjust: policies and the resync cap change live, identity and addresses at restart', () => {
  const running = readReplicationConfig(configWith(good))!;
  assert.deepEqual(planAdjust(running, running), {
    apply: [],
    peersAdded: [],
    peersRemoved: [],
    atRestart: [],
  });
  // The same cap written two ways is no change.
  assert.deepEqual(planAdjust({ ...running, resyncRate: 104857600 }, { ...running, resyncRate: '100M' }), {
    apply: [],
    peersAdded: [],
    peersRemoved: [],
    atRestart: [],
  });
  const wanted = {
    ...running,
    quorum: 'io-error' as const,
    afterSplitBrain: 'discard-zero-changes' as const,
    resyncRate: '50M',
    listen: '10.0.0.1:7790',
    durableWrites: false,
    // Same peers in another order: no change; a moved peer: a change.
    peers: [
      { node: 'tb', address: '10.0.0.9:7789', tiebreaker: true },
      { node: 'b', address: '10.0.0.3:7789', tiebreaker: false },
    ],
  };
  assert.deepEqual(planAdjust(running, wanted), {
    apply: [
      { setting: 'quorum', from: 'suspend-io', to: 'io-error' },
      { setting: 'afterSplitBrain', from: 'disconnect', to: 'discard-zero-changes' },
      { setting: 'resyncRate', from: '0', to: String(50 * 1024 * 1024) },
    ],
    peersAdded: [],
    peersRemoved: [],
    atRestart: ['listen', 'durableWrites', 'peers'],
  });
  const reordered = { ...running, peers: [...running.peers].reverse() };
  assert.deepEqual(planAdjust(running, reordered).atRestart, []);
});

test('volume adjust: a peer that joins or leaves applies at once, a moved one at restart', () => {
  const running = readReplicationConfig(configWith(good))!;
  const joined = { node: 'd', address: '10.0.0.4:7789', tiebreaker: false };
  const wanted = { ...running, peers: [...running.peers.filter((p) => p.node !== 'b'), joined] };
  const plan = planAdjust(running, wanted);
  assert.deepEqual([plan.peersAdded, plan.peersRemoved, plan.atRestart], [['d'], ['b'], []]);
  assert.deepEqual(peersInForce(running, wanted), wanted.peers);
  // A moved peer keeps running at its old address until the restart.
  const moved = {
    ...running,
    peers: running.peers.map((p) => (p.node === 'b' ? { ...p, address: '10.0.0.7:1' } : p)),
  };
  assert.deepEqual(planAdjust(running, moved).atRestart, ['peers']);
  assert.deepEqual(peersInForce(running, moved), running.peers);
});
