import { constants } from 'node:os';
import type { VserverDefinition } from './definition.ts';

/** Capabilities a VPS keeps: enough for daemons that drop privileges and bind low ports, no admin powers. */
export const VSERVER_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_SETFCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_RAW',
  'CAP_SYS_CHROOT',
  'CAP_AUDIT_WRITE',
];

/** System calls a VPS never needs; they fail with EPERM. `mount` joins them unless allowed. */
export const BLOCKED_SYSCALLS = [
  'init_module',
  'finit_module',
  'delete_module',
  'kexec_load',
  'kexec_file_load',
  'open_by_handle_at',
  'swapon',
  'swapoff',
  'acct',
  'settimeofday',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'iopl',
  'ioperm',
  'lookup_dcookie',
  'quotactl',
  'syslog',
  'bpf',
  'perf_event_open',
  'add_key',
  'request_key',
  'keyctl',
  'userfaultfd',
  'vhangup',
  'nfsservctl',
  'create_module',
  'get_kernel_syms',
  'query_module',
];
export const MOUNT_SYSCALLS = [
  'mount',
  'umount',
  'umount2',
  'pivot_root',
  'fsopen',
  'fsmount',
  'fsconfig',
  'move_mount',
  'open_tree',
];

export interface OciOptions {
  /** Path of the cgroup (relative to each hierarchy), unique per vserver and state dir. */
  cgroupsPath: string;
}

const CPU_PERIOD = 100_000;

/** The OCI runtime config (config.json) for a vserver. Pure: the same definition gives the same config. */
export function buildOciConfig(def: VserverDefinition, opts: OciOptions): Record<string, unknown> {
  const caps = def.allow.mount ? [...VSERVER_CAPABILITIES, 'CAP_SYS_ADMIN'] : VSERVER_CAPABILITIES;
  const blocked = def.allow.mount ? BLOCKED_SYSCALLS : [...BLOCKED_SYSCALLS, ...MOUNT_SYSCALLS];
  const resources: Record<string, unknown> = {
    devices: [{ allow: false, access: 'rwm' }, ...ALLOWED_DEVICES],
  };
  if (def.limits.memory !== undefined) {
    // Swap limit equal to memory: the limit cannot be escaped by swapping.
    resources.memory = { limit: def.limits.memory, swap: def.limits.memory };
  }
  if (def.limits.cpu !== undefined) {
    resources.cpu = { quota: Math.round(def.limits.cpu * CPU_PERIOD), period: CPU_PERIOD };
  }
  if (def.limits.pids !== undefined) resources.pids = { limit: def.limits.pids };
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: def.command,
      env: [
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'TERM=xterm',
        'container=cvserver',
        ...Object.entries(def.env).map(([k, v]) => `${k}=${v}`),
      ],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: true,
    },
    root: { path: def.rootfs, readonly: false },
    hostname: def.hostname ?? def.name,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
      {
        destination: '/run',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'nodev', 'mode=755', 'size=65536k'],
      },
    ],
    linux: {
      namespaces: ['pid', 'mount', 'uts', 'ipc', 'network', 'cgroup'].map((type) => ({ type })),
      cgroupsPath: opts.cgroupsPath,
      resources,
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/proc/scsi',
        '/sys/firmware',
        '/sys/devices/virtual/powercap',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      seccomp: {
        defaultAction: 'SCMP_ACT_ALLOW',
        architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
        syscalls: [{ names: blocked, action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      },
    },
  };
}

const ALLOWED_DEVICES = [
  [1, 3], // null
  [1, 5], // zero
  [1, 7], // full
  [1, 8], // random
  [1, 9], // urandom
  [5, 0], // tty
  [5, 2], // ptmx
].map(([major, minor]) => ({ allow: true, type: 'c', major, minor, access: 'rwm' }));

/** "SIGTERM" → 15, "SIGRTMIN+3" → 37: crun kill takes the number. */
export function signalNumber(name: string): number {
  const n = name.startsWith('SIG') ? name : `SIG${name}`;
  const rt = /^SIGRTMIN\+(\d+)$/.exec(n);
  if (rt) return 34 + Number(rt[1]);
  if (/^\d+$/.test(name)) return Number(name);
  const num = (constants.signals as Record<string, number>)[n];
  if (num === undefined) throw new Error(`unknown signal ${name}`);
  return num;
}
