import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { credentialPaths, type InitCredentialsOptions, initCredentials } from '../agent/credentials.ts';
import { type ClusterSpec, describeSpec, loadClusterConfig } from '../cluster/config.ts';
import { UserError } from '../lib/errors.ts';
import { emit } from './output.ts';

/** What each node needs of the credentials: the secret, the CA certificate and its own certificate and key. */
export interface NodeFiles {
  node: string;
  address: string;
  files: string[];
}

export interface InitResult {
  cluster: string;
  created: string[];
  nodes: NodeFiles[];
  /** Made here and copied nowhere: whoever holds it can make certificates the cluster trusts. */
  keepPrivate: string[];
}

/** Which files go to which node (at the same paths). Pure: the paths come from cluster.yaml. */
export function credentialCopyPlan(spec: ClusterSpec): { nodes: NodeFiles[]; keepPrivate: string[] } {
  const tls = spec.tls_dir;
  return {
    nodes: spec.nodes.map((n) => ({
      node: n.name,
      address: n.addresses[0] ?? '',
      files: [spec.secret_file, join(tls, 'ca.crt'), join(tls, `${n.name}.crt`), join(tls, `${n.name}.key`)],
    })),
    keepPrivate: [join(tls, 'ca.key')],
  };
}

/** Makes the credentials of a validated cluster; refuses (changing nothing) if any already exist. */
export function initCluster(spec: ClusterSpec): InitResult {
  const opts: InitCredentialsOptions = {
    secretFile: spec.secret_file,
    tlsDir: spec.tls_dir,
    nodes: spec.nodes.map((n) => ({ name: n.name, addresses: n.addresses })),
  };
  const existing = credentialPaths(opts).filter((f) => existsSync(f));
  if (existing.length > 0) {
    const more = existing.length > 1 ? ` and ${existing.length - 1} more` : '';
    throw new UserError(
      `cluster ${spec.cluster} already has credentials (${existing[0]} exists${more}); nothing changed. Making new ones would lock out the nodes that have the old ones: remove the old files yourself first if that is what you want`,
    );
  }
  const { created } = initCredentials(opts);
  return { cluster: spec.cluster, created, ...credentialCopyPlan(spec) };
}

function describeInit(spec: ClusterSpec, r: InitResult): string {
  return [
    ...describeSpec(spec),
    '',
    `made ${r.created.length} files: the shared secret, the cluster CA and a certificate per node`,
    'copy to each node, at the same paths (mode 0600 for the secret and the .key files):',
    ...r.nodes.map((n) => `  ${n.node} (${n.address}): ${n.files.join(' ')}`),
    `keep ${r.keepPrivate.join(', ')} off the nodes and safe: it signs certificates the cluster trusts`,
  ].join('\n');
}

export function registerInitCommand(program: Command): void {
  program
    .command('init')
    .description(
      "make the cluster's credentials once (shared secret, CA, a certificate per node) from cluster.yaml and say which files go to which node",
    )
    .argument('<cluster-yaml>', 'the cluster file (see docs/cluster.md)')
    .option('--json', 'machine-readable output')
    .action((file: string, opts: { json?: boolean }) => {
      const spec = loadClusterConfig(file);
      const result = initCluster(spec);
      emit(!!opts.json, result, () => describeInit(spec, result));
    });
}
