import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { errnoCode, errorMessage, UserError } from '../lib/errors.ts';

/**
 * The cluster's credentials, made once by the operator and copied to every node: the shared secret
 * (volume replication auth), a private CA, and per node one certificate used both as etcd server
 * certificate and as client certificate (etcd peers, agents and the CLI all authenticate with it).
 */

export interface CredentialNode {
  name: string;
  addresses: string[];
}

export interface InitCredentialsOptions {
  secretFile: string;
  tlsDir: string;
  nodes: CredentialNode[];
}

export interface NodeCredentials {
  ca: string;
  cert: string;
  key: string;
}

const TEN_YEARS_DAYS = '3650';
const NODE_NAME = /^[a-z][a-z0-9-]*$/;

/** The files `initCredentials` makes, so callers (and the refusal check) agree on paths. */
export function credentialPaths(opts: InitCredentialsOptions): string[] {
  return [
    opts.secretFile,
    join(opts.tlsDir, 'ca.crt'),
    join(opts.tlsDir, 'ca.key'),
    ...opts.nodes.flatMap((n) => [join(opts.tlsDir, `${n.name}.crt`), join(opts.tlsDir, `${n.name}.key`)]),
  ];
}

/** SAN list of a node certificate: its addresses, loopback and its name (duplicates dropped). */
export function subjectAltNames(node: CredentialNode): string[] {
  const entries = [...node.addresses, '127.0.0.1'].map((a) => (isIP(a) ? `IP:${a}` : `DNS:${a}`));
  entries.push('DNS:localhost', `DNS:${node.name}`);
  return [...new Set(entries)];
}

/**
 * Makes the secret, the CA and one certificate per node with the `openssl` CLI. Everything is made in a
 * scratch directory first and only then written (exclusively) to its place: a refusal or an openssl
 * failure leaves nothing behind.
 */
export function initCredentials(opts: InitCredentialsOptions): { created: string[] } {
  if (opts.nodes.length === 0) throw new UserError('credentials: no nodes given');
  const names = new Set<string>();
  for (const n of opts.nodes) {
    if (!NODE_NAME.test(n.name))
      throw new UserError(`credentials: node name '${n.name}' must match ${NODE_NAME}`);
    if (names.has(n.name)) throw new UserError(`credentials: node '${n.name}' given twice`);
    if (n.name === 'ca') throw new UserError(`credentials: node name 'ca' clashes with the CA's files`);
    names.add(n.name);
  }
  const targets = credentialPaths(opts);
  const existing = targets.filter((f) => existsSync(f));
  if (existing.length > 0)
    throw new UserError(
      `credentials: refusing to overwrite existing ${existing.join(', ')} (remove them first)`,
    );

  const scratch = mkdtempSync(join(tmpdir(), 'cvserver-credentials-'));
  const made = new Map<string, { content: Buffer; mode: number }>();
  try {
    const ca = makeCa(scratch);
    made.set(join(opts.tlsDir, 'ca.crt'), { content: ca.cert, mode: 0o644 });
    made.set(join(opts.tlsDir, 'ca.key'), { content: ca.key, mode: 0o600 });
    for (const node of opts.nodes) {
      const nc = makeNodeCert(scratch, node);
      made.set(join(opts.tlsDir, `${node.name}.crt`), { content: nc.cert, mode: 0o644 });
      made.set(join(opts.tlsDir, `${node.name}.key`), { content: nc.key, mode: 0o600 });
    }
    made.set(opts.secretFile, {
      content: Buffer.from(`${randomBytes(32).toString('base64')}\n`),
      mode: 0o600,
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  const created: string[] = [];
  try {
    mkdirSync(opts.tlsDir, { recursive: true, mode: 0o755 });
    mkdirSync(dirname(opts.secretFile), { recursive: true, mode: 0o755 });
    for (const [file, { content, mode }] of made) {
      writeFileSync(file, content, { flag: 'wx', mode });
      created.push(file);
    }
  } catch (err) {
    for (const f of created) unlinkSync(f);
    throw new UserError(`credentials: cannot write (${errnoCode(err) ?? errorMessage(err)}); nothing kept`);
  }
  return { created };
}

/** Reads a node's PEM files; a missing one is named in the error. */
export function loadNodeCredentials(tlsDir: string, node: string): NodeCredentials {
  const read = (file: string): string => {
    const path = join(tlsDir, file);
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      const code = errnoCode(err);
      const why =
        code === 'ENOENT' ? 'missing (made by the credentials init command)' : (code ?? errorMessage(err));
      throw new UserError(`TLS file ${path}: ${why}`);
    }
  };
  return { ca: read('ca.crt'), cert: read(`${node}.crt`), key: read(`${node}.key`) };
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: 30_000 });
  } catch (err) {
    const e = err as { stderr?: string };
    const detail = e.stderr?.trim() || errorMessage(err);
    throw new UserError(`credentials: openssl ${args[0]} failed: ${detail}`);
  }
}

function genKey(file: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);
}

function makeCa(dir: string): { cert: Buffer; key: Buffer } {
  const key = join(dir, 'ca.key');
  const cert = join(dir, 'ca.crt');
  const conf = join(dir, 'ca.cnf');
  writeFileSync(
    conf,
    [
      '[req]',
      'distinguished_name = dn',
      'x509_extensions = v3_ca',
      'prompt = no',
      '[dn]',
      'CN = cvserver cluster CA',
      '[v3_ca]',
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  genKey(key);
  openssl([
    'req',
    '-x509',
    '-new',
    '-config',
    conf,
    '-key',
    key,
    '-sha256',
    '-days',
    TEN_YEARS_DAYS,
    '-out',
    cert,
  ]);
  return { cert: readFileSync(cert), key: readFileSync(key) };
}

function makeNodeCert(dir: string, node: CredentialNode): { cert: Buffer; key: Buffer } {
  const key = join(dir, `${node.name}.key`);
  const csr = join(dir, `${node.name}.csr`);
  const cert = join(dir, `${node.name}.crt`);
  const ext = join(dir, `${node.name}.ext`);
  writeFileSync(
    ext,
    [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      'extendedKeyUsage = serverAuth, clientAuth',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      `subjectAltName = ${subjectAltNames(node).join(', ')}`,
      '',
    ].join('\n'),
  );
  genKey(key);
  openssl(['req', '-new', '-key', key, '-subj', `/CN=${node.name}`, '-out', csr]);
  const serial = `0x${randomBytes(16).toString('hex').replace(/^./, '1')}`;
  openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    join(dir, 'ca.crt'),
    '-CAkey',
    join(dir, 'ca.key'),
    '-set_serial',
    serial,
    '-sha256',
    '-days',
    TEN_YEARS_DAYS,
    '-extfile',
    ext,
    '-out',
    cert,
  ]);
  return { cert: readFileSync(cert), key: readFileSync(key) };
}
