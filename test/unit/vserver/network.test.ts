import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hostInterfaceMac, hostInterfaceName } from '../../../src/vserver/network.ts';

test("a vserver's host veth: a short unique name, and a stable MAC above any port's (the bridge keeps its own)", () => {
  const a = hostInterfaceName('/var/lib/cvserver', 'web');
  const b = hostInterfaceName('/var/lib/cvserver', 'mail');
  assert.match(a, /^vs[0-9a-f]{10}$/);
  assert.ok(a.length <= 15, 'IFNAMSIZ');
  assert.notEqual(a, b);
  const mac = hostInterfaceMac(a);
  assert.match(mac, /^fe(:[0-9a-f]{2}){5}$/);
  // Unicast (bit 0 of the first octet clear) and locally administered (bit 1 set).
  assert.equal(0xfe & 1, 0);
  assert.equal(0xfe & 2, 2);
  assert.equal(hostInterfaceMac(a), mac, 'stable');
  assert.notEqual(hostInterfaceMac(b), mac);
});
