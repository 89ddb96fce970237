import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkMemberId, decodeMemberAdd, decodeMemberList } from '../../../src/agent/etcd/wire.ts';

test("MemberAdd's reply: the new member (no name until it starts) and the list with it", () => {
  const r = decodeMemberAdd({
    header: { cluster_id: '1', member_id: '2', revision: '9' },
    member: { ID: '14619204111913618295', peerURLs: ['https://10.0.0.3:2380'], isLearner: true },
    members: [
      { ID: '2', name: 'n1', peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'] },
      { ID: '14619204111913618295', peerURLs: ['https://10.0.0.3:2380'], isLearner: true },
    ],
  });
  assert.deepEqual(r.member, {
    id: '14619204111913618295',
    name: '',
    peerUrls: ['https://10.0.0.3:2380'],
    clientUrls: [],
    isLearner: true,
  });
  assert.deepEqual(
    r.members.map((m) => [m.name, m.isLearner]),
    [
      ['n1', false],
      ['', true],
    ],
  );
  assert.throws(() => decodeMemberAdd({ members: [] }), /no member/);
});

test('MemberRemove and MemberPromote answer with the member list; ids are decimal strings', () => {
  assert.deepEqual(decodeMemberList({ header: {}, members: [{ ID: 7, name: 'n2' }] })[0]?.id, '7');
  assert.equal(checkMemberId('12121962516846889848'), '12121962516846889848');
  assert.throws(() => checkMemberId('0x10'), /member ID must be a decimal/);
});
