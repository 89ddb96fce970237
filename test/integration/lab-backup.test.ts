/**
 * Scheduled backups in a real lab (issue 12, "What it must show"): with a schedule every 15 s (cron
 * with seconds), the demo's backup runs on the node that runs it and nowhere else; after a power cut
 * of that node, the next scheduled run happens on the new owner, which knows the last one (the record
 * in etcd); status shows the last backup. The cluster's own state (etcd snapshot, cluster.yaml) is
 * backed up by the manager. A "backup now" is run by the owner at once. The repository is a local directory: the lab's nodes share the host's
 * filesystem.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import type { ClusterStatus } from '../../src/agent/status.ts';
import { eventsMatching, showEvents, TestLab, until } from '../helpers/lab.ts';

type VBackup = NonNullable<ClusterStatus['vservers'][number]['backup']>;

function demoBackup(s: ClusterStatus): VBackup | undefined {
  return s.vservers.find((v) => v.name === 'demo')?.backup ?? undefined;
}

function restic(repo: string, pw: string, args: string[]): string {
  const r = spawnSync('restic', ['-r', repo, '--password-file', pw, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, `restic ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('scheduled backups run on the owner only, move with a failover, and show in status; the manager backs up the cluster', async (t) => {
  const lab = await TestLab.up(t, { letter: 'o' });
  const dir = mkdtempSync('/tmp/cvserver-lab-backup-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const repo = join(dir, 'repo');
  const pw = join(dir, 'password');
  writeFileSync(pw, 'lab backup password\n');
  chmodSync(pw, 0o600);
  restic(repo, pw, ['init']);

  const before = await lab.demoHealthy(90_000);
  const yaml = parse(readFileSync(join(lab.dir, 'cluster.yaml'), 'utf8')) as Record<string, unknown> & {
    vservers: Record<string, Record<string, unknown>>;
  };
  yaml.backup = {
    repository: repo,
    password_file: pw,
    cluster_schedule: '*/20 * * * * *',
    prune_schedule: '0 0 1 1 *',
  };
  yaml.vservers.demo!.backup = { schedule: '*/15 * * * * *', keep: { last: 5 } };
  const file = join(lab.dir, 'cluster-backup.yaml');
  writeFileSync(file, stringify(yaml));
  const applied = await lab.exec('n1', ['apply', file]);
  assert.equal(applied.status, 0, applied.stderr);
  const appliedAt = Date.now();

  // Two scheduled runs on the owner.
  const first = await until(
    'two scheduled backups of the demo',
    async () => {
      const b = demoBackup(await lab.status());
      const ok = eventsMatching(await lab.events(), /^demo: backup [0-9a-f?]+: .* added in/, appliedAt);
      return b?.lastSuccess && ok.length >= 2 ? { b, ok } : undefined;
    },
    90_000,
  );
  t.diagnostic(
    `demo on ${before.node}: last backup ${first.b.lastSuccess?.snapshotId.slice(0, 8)} on ${first.b.lastSuccess?.node}, ${first.b.lastSuccess?.bytesAdded} bytes added in ${first.b.lastSuccess?.seconds} s`,
  );
  assert.equal(first.b.lastSuccess?.node, before.node, 'the owner ran it');
  assert.deepEqual(
    [...new Set(first.ok.map((e) => e.node))],
    [before.node],
    `only the owner runs the demo's backup:\n${showEvents(first.ok)}`,
  );
  assert.equal(first.b.late, false);

  // status (the CLI's table) shows it.
  const shown = await lab.exec(lab.present()[0]!, ['status']);
  assert.match(shown.stdout, /BACKUP OF\s+SCHEDULE\s+LAST SUCCESS/);
  assert.match(shown.stdout, new RegExp(`demo\\s+\\*/15 \\* \\* \\* \\* \\*\\s+\\S+ \\S+ on ${before.node}`));

  // The cluster's own state, by the manager.
  const cluster = await until(
    "a backup of the cluster's state",
    async () => {
      const s = await lab.status();
      return s.clusterBackup?.lastSuccess ? s : undefined;
    },
    60_000,
  );
  assert.equal(cluster.clusterBackup?.lastSuccess?.node, cluster.manager, 'run by the manager');
  const snaps = JSON.parse(restic(repo, pw, ['snapshots', '--json', '--tag', 'cluster'])) as { id: string }[];
  assert.ok(snaps.length >= 1);
  const files = restic(repo, pw, ['ls', snaps.at(-1)!.id]);
  assert.match(files, /\/etcd\.db$/m);
  assert.match(files, /\/cluster\.yaml$/m);

  // Power cut of the owner: the next scheduled run is the new owner's.
  const cutAt = Date.now();
  await lab.kill(before.node);
  // A run that ended while `lab kill` was under way is still the old owner's.
  const killedAt = Date.now();
  const after = await lab.demoHealthy(90_000, before.node);
  const moved = await until(
    'a scheduled backup on the new owner',
    async () => {
      const b = demoBackup(await lab.status());
      return b?.lastSuccess && b.lastSuccess.node === after.node && b.lastSuccess.at > cutAt ? b : undefined;
    },
    90_000,
  );
  t.diagnostic(
    `after the cut: demo on ${after.node}, backup ${moved.lastSuccess?.snapshotId.slice(0, 8)} there, ${moved.lastSuccess?.bytesAdded} bytes added in ${moved.lastSuccess?.seconds} s`,
  );
  const events = await lab.events();
  const runs = eventsMatching(events, /^demo: backup [0-9a-f?]+: .* added in/, appliedAt);
  const nodes = runs.map((e) => e.node);
  assert.ok(
    nodes.every((n) => n === before.node || n === after.node),
    `no other node ran the demo's backup:\n${showEvents(runs)}`,
  );
  assert.ok(
    runs.filter((e) => e.at > killedAt).every((e) => e.node === after.node),
    `after the cut only ${after.node}:\n${showEvents(runs)}`,
  );
  // Each scheduled time ran once: no two successful runs share a due time.
  const dues = runs.map((e) => /scheduled for (\S+)\)/.exec(e.text)?.[1]);
  assert.equal(new Set(dues).size, dues.length, `one run per due time:\n${showEvents(runs)}`);
  const list = JSON.parse(restic(repo, pw, ['snapshots', '--json', '--tag', 'vserver=demo'])) as unknown[];
  assert.ok(list.length >= 3, `${list.length} backups of the demo in the repository`);

  // Backup now (as POST /api/vservers/demo/backup): the owner runs it, recorded with who asked.
  const askedAt = Date.now();
  const asker = lab.present().find((n) => n !== after.node)!;
  const asked = await until(
    'backup now accepted (not while a scheduled run is on)',
    async () => {
      const r = await lab.exec(asker, ['backup', 'now', 'demo', '--json']);
      if (r.status === 0) return JSON.parse(r.stdout) as { node: string };
      assert.match(r.stderr, /is running on|already requested/, r.stderr);
      return undefined;
    },
    60_000,
  );
  assert.equal(asked.node, after.node);
  const ran = await until(
    'the requested backup on the owner',
    async () =>
      eventsMatching(await lab.events(), /^demo: backup [0-9a-f]+: .* \(requested by root on /, askedAt)[0],
    60_000,
  );
  assert.equal(ran.node, after.node, ran.text);
  assert.ok(eventsMatching(await lab.events(), /^demo: backup now requested by root on /, askedAt).length);
});
