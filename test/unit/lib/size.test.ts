import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSize, parseSize } from '../../../src/lib/size.ts';

test('parseSize accepts binary units and plain bytes', () => {
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('64KiB'), 64 * 1024);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('1.5K'), 1536);
});

test('parseSize rejects what is not a size', () => {
  for (const bad of ['12XB', '', 'G', '-1G', '1 2G', 'abc']) assert.equal(parseSize(bad), undefined, bad);
});

test('formatSize is short', () => {
  assert.equal(formatSize(1536), '1.5K');
  assert.equal(formatSize(2 * 1024 ** 3), '2G');
  assert.equal(formatSize(100), '100B');
});
