/**
 * The lab's cluster.yaml and its demo vserver: busybox httpd with a small CGI at /cgi-bin/records —
 * POST appends a numbered record to /data/records.log (on the vserver's volume), fsyncs it, and only
 * then answers the record's number; GET answers the count (GET ?all: every record).
 */
import { stringify } from 'yaml';
import { LAB_LEASE_TTL, type Lab } from './layout.ts';

export const DEMO_PORT = 7801;

/** The CGI (busybox sh). A record is acknowledged only after `sync FILE` (fsync) succeeded. */
export const RECORDS_CGI = `#!/bin/sh
# POST: append a numbered record, fsync it, answer its number. GET: the count (?all: every record).
LOG=/data/records.log
LOCK=/data/.lock
fail() { rmdir $LOCK 2>/dev/null; printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s\\n' "$1"; exit 0; }
case "$REQUEST_METHOD" in
POST)
  body=$(head -c "\${CONTENT_LENGTH:-0}" | tr -cd 'A-Za-z0-9 ._:=-' | head -c 200)
  until mkdir $LOCK 2>/dev/null; do usleep 2000; done
  count=$(wc -l < $LOG) || fail "cannot read $LOG"
  n=$((count + 1))
  echo "$n $(date +%s) $body" >> $LOG || fail "cannot append to $LOG"
  sync $LOG || fail "cannot fsync $LOG"
  rmdir $LOCK
  printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$n" ;;
*)
  printf 'Content-Type: text/plain\\r\\n\\r\\n'
  if [ "$QUERY_STRING" = all ]; then cat $LOG; else wc -l < $LOG; fi ;;
esac
`;

const INDEX_HTML = `<!doctype html>
<title>cvserver lab demo</title>
<h1>cvserver lab demo</h1>
<p>POST /cgi-bin/records appends a numbered record (fsync'd) and answers its number;
GET /cgi-bin/records answers the count; GET /cgi-bin/records?all lists them.</p>
<pre>curl -d hello URL/cgi-bin/records</pre>
`;

/**
 * The vserver's PID 1: prepares /data (a stale lock from a power cut removed, a torn last line
 * completed so that line N stays record N), writes the CGI and the index page, then becomes httpd.
 */
export function demoStartScript(): string {
  return [
    'set -e',
    'mkdir -p /data /www/cgi-bin',
    'rm -rf /data/.lock',
    'touch /data/records.log',
    'if [ -s /data/records.log ] && [ -n "$(tail -c 1 /data/records.log)" ]; then echo >> /data/records.log; fi',
    // syncfs of the volume only: a global sync(2) would wait on every filesystem of the host.
    'sync -f /data/records.log',
    `cat > /www/cgi-bin/records <<'CGI'\n${RECORDS_CGI}CGI`,
    'chmod 755 /www/cgi-bin/records',
    `cat > /www/index.html <<'HTML'\n${INDEX_HTML}HTML`,
    'exec busybox httpd -f -p 80 -h /www',
  ].join('\n');
}

/** The demo's vserver definition fields (VserverDefinition without name and rootfs), YAML-shaped. */
export function demoDefinition(lab: Lab) {
  return {
    hostname: 'demo',
    command: ['/bin/sh', '-c', demoStartScript()],
    network: { bridge: 'lan0', addresses: [`${lab.demo.address}/24`] },
    // httpd as PID 1 ignores SIGTERM (no handler in a pid namespace), so a soft stop would only
    // wait for the timeout: kill at once. Safe: a record is answered only once fsync'd.
    stop: { signal: 'SIGKILL', timeout: '2s' },
    health_checks: [
      {
        type: 'http',
        port: 80,
        path: '/cgi-bin/records',
        interval: '1s',
        timeout: '1s',
        retries: 3,
        // Probed every 200 ms until it first answers (failures in the start period do not count).
        start_period: '30s',
        start_interval: '200ms',
      },
    ],
  };
}

/** A standalone vserver YAML of the demo (for `cvserver vserver create`, without the cluster). */
export function demoVserverYaml(lab: Lab, rootfs: string): string {
  return stringify({ name: lab.demo.vserver, rootfs, ...demoDefinition(lab) }, { lineWidth: 0 });
}

/**
 * The lab's cluster.yaml: its nodes with roles and addresses, and the demo vserver on every full
 * node's replica. (The lead completes the agent's fields; state_dir is left out on purpose: each
 * node's CVSERVER_STATE_DIR is its own directory under the lab dir.)
 */
export function labClusterYaml(lab: Lab): string {
  const full = lab.nodes.filter((n) => n.role === 'full').map((n) => n.name);
  const spec = {
    cluster: `lab-${lab.name}`,
    secret_file: `${lab.dir}/secret`,
    tls_dir: `${lab.dir}/tls`,
    nodes: lab.nodes.map((n) => ({ name: n.name, role: n.role, addresses: n.addresses })),
    // All nodes share one quiet machine and its bridge: faster elections and a shorter lease than the
    // defaults (etcd 100/1000 ms, lease 3 s) make failover quicker; see docs/cluster.md.
    etcd: { heartbeat_ms: 50, election_ms: 500 },
    // Renewals about three times a second (each is an etcd request and a guard feed): with a 2 s lease
    // the timing rule (docs/cluster.md) still holds, 0.35 + 2 x 0.35 + 0.7 = 1.75 s.
    timing: {
      lease_ttl: lab.leaseTtl ?? LAB_LEASE_TTL,
      loop_interval: 0.35,
      renew_timeout: 0.35,
      fence_margin: 0.7,
    },
    // Three heartbeats a second per link; a link is down after three silent ones (the shortest
    // allowed): seen within a second.
    membership: { interval_ms: 330, dead_after_ms: 1000 },
    vservers: {
      [lab.demo.vserver]: {
        desired: 'started',
        template: 'busybox',
        ...demoDefinition(lab),
        volume: { size: '256M', filesystem: 'ext4', replicas: full.slice(0, 3), port: DEMO_PORT },
        placement: { preferred: full.slice(0, 1) },
      },
    },
  };
  return `# The cvserver lab "${lab.name}" (written by cvserver lab up)\n${stringify(spec, { lineWidth: 0 })}`;
}
