import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodeKeepAliveResponse,
  encodeKeepAliveRequest,
  nextMessage,
} from '../../../src/agent/etcd/keepalive-stream.ts';

test('keepalive request: a gRPC frame around field 1 (the lease ID) as a varint, 63-bit IDs exact', () => {
  assert.deepEqual([...encodeKeepAliveRequest('1')], [0, 0, 0, 0, 2, 0x08, 0x01]);
  assert.deepEqual([...encodeKeepAliveRequest('300')], [0, 0, 0, 0, 3, 0x08, 0xac, 0x02]);
  const big = encodeKeepAliveRequest('9223372036854775807');
  assert.equal(big.readUInt32BE(1), 10);
  assert.deepEqual([...big.subarray(5)], [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
});

test('keepalive reply: ID and TTL read, the header skipped; no TTL or a negative one is 0 (lease gone)', () => {
  // As etcd 3.4 answered in the lab: header {cluster_id, member_id, revision, raft_term}, ID, TTL 10.
  const lab = Buffer.from(
    '0a1b089f9ce5df8ca9d4d99f0110fba296e8baee80f79f0118ae02200510dbb4eb95a9c6e8bd11180a',
    'hex',
  );
  const r = decodeKeepAliveResponse(lab);
  assert.equal(r.ttl, 10);
  assert.match(r.id, /^[1-9][0-9]*$/);
  assert.deepEqual(decodeKeepAliveResponse(Buffer.from([0x10, 0x07])), { id: '7', ttl: 0 });
  const negative = Buffer.from([0x10, 0x07, 0x18, ...Array(9).fill(0xff), 0x01]);
  assert.deepEqual(decodeKeepAliveResponse(negative), { id: '7', ttl: 0 });
  assert.throws(() => decodeKeepAliveResponse(Buffer.from([0x10, 0x87])), /bad varint/);
  assert.throws(() => decodeKeepAliveResponse(Buffer.from([0x0a, 0x05, 0x00])), /past the end/);
  assert.throws(() => decodeKeepAliveResponse(Buffer.from([0x15, 0, 0, 0, 0])), /wire type 5/);
});

test('gRPC frames: a whole message, or incomplete until its last byte arrives; compressed refused', () => {
  const two = Buffer.concat([encodeKeepAliveRequest('1'), encodeKeepAliveRequest('300')]);
  const first = nextMessage(two);
  assert.ok(first !== 'incomplete');
  assert.equal(first.length, 7);
  assert.deepEqual([...first.message], [0x08, 0x01]);
  assert.equal(nextMessage(two.subarray(7, 12)), 'incomplete');
  assert.equal(nextMessage(two.subarray(7, 14)), 'incomplete');
  assert.ok(nextMessage(two.subarray(7)) !== 'incomplete');
  assert.throws(() => nextMessage(Buffer.from([1, 0, 0, 0, 0])), /compressed/);
});
