import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { parseSize } from '../lib/size.ts';

/** A size such as "512M", kept as bytes. */
const size = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const bytes = parseSize(v);
  if (bytes === undefined || bytes <= 0) {
    ctx.addIssue({
      code: 'custom',
      message: `"${v}" is not a size (expected a number with an optional unit K, M, G or T, e.g. 512M)`,
    });
    return z.NEVER;
  }
  return bytes;
});

/** A duration: a number of seconds, or "500ms", "10s", "2m". Kept as milliseconds. */
const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return Math.round(v * 1000);
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(v);
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (expected e.g. 500ms, 10s, 2m)` });
    return z.NEVER;
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * unit);
});

const NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

/** "10.0.0.2/24": an IPv4 address with its prefix length. */
const cidr = z.string().refine(
  (v) => {
    const [ip, prefix, ...rest] = v.split('/');
    return (
      rest.length === 0 &&
      ip !== undefined &&
      isIPv4(ip) &&
      prefix !== undefined &&
      /^\d{1,2}$/.test(prefix) &&
      Number(prefix) >= 1 &&
      Number(prefix) <= 32
    );
  },
  { message: 'expected an IPv4 address with a prefix length 1-32, e.g. 10.0.0.2/24' },
);
const ipv4 = z.string().refine((v) => isIPv4(v), { message: 'expected an IPv4 address, e.g. 10.0.0.1' });

const common = {
  interval: duration.default(10_000),
  timeout: duration.default(5_000),
  retries: z.number().int().min(1).default(3),
  start_period: duration.default(0),
  /** How often to probe during the start period (failures there do not count); default: interval. */
  start_interval: duration.optional(),
};

export const healthCheckSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('exec'), command: z.array(z.string()).min(1), ...common }),
  z.strictObject({
    type: z.literal('tcp'),
    host: ipv4.optional(),
    port: z.number().int().min(1).max(65535),
    ...common,
  }),
  z.strictObject({
    type: z.literal('http'),
    host: ipv4.optional(),
    port: z.number().int().min(1).max(65535).default(80),
    path: z.string().startsWith('/').default('/'),
    expect_status: z.number().int().min(100).max(599).default(200),
    body_match: z.string().optional(),
    ...common,
  }),
]);

/**
 * A vserver as declared in YAML. Exported so the cluster file can embed the same schema.
 * Durations are held in milliseconds and sizes in bytes after parsing.
 */
export const vserverDefinitionSchema = z
  .strictObject({
    name: z.string().regex(NAME, 'expected a name of lowercase letters, digits and dashes (at most 32)'),
    rootfs: z.string().startsWith('/', 'expected an absolute path'),
    /** The program run as PID 1: ["/sbin/init"] for a full distribution, or a plain command. */
    command: z.array(z.string()).min(1).default(['/sbin/init']),
    hostname: z
      .string()
      .regex(/^[a-zA-Z0-9.-]{1,63}$/, 'expected a host name')
      .optional(),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
    network: z
      .strictObject({
        /** The host bridge the veth pair is attached to. */
        bridge: z
          .string()
          .regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'expected an interface name (at most 15 characters)'),
        /** A named network namespace (ip netns) holding the bridge; the root namespace when absent. */
        netns: z.string().optional(),
        addresses: z.array(cidr).min(1),
        gateway: ipv4.optional(),
      })
      .optional(),
    limits: z
      .strictObject({
        /** CPUs, e.g. 0.5 or 2. */
        cpu: z.number().positive().max(1024).optional(),
        memory: size.optional(),
        pids: z.number().int().min(1).optional(),
      })
      .default({}),
    stop: z
      .strictObject({
        /** Defaults to SIGRTMIN+3 when the command is an init (systemd), SIGTERM otherwise. */
        signal: z
          .string()
          .regex(/^(SIG)?[A-Z0-9+]+$/, 'expected a signal name like SIGTERM')
          .optional(),
        timeout: duration.default(10_000),
      })
      .default({ timeout: 10_000 }),
    /** Extra powers a VPS does not get by default. */
    allow: z.strictObject({ mount: z.boolean().default(false) }).default({ mount: false }),
    health_checks: z.array(healthCheckSchema).default([]),
    restart: z
      .strictObject({
        policy: z.enum(['no', 'on-failure']).default('on-failure'),
        max_restarts: z.number().int().min(0).default(3),
        window: duration.default(600_000),
      })
      .default({ policy: 'on-failure', max_restarts: 3, window: 600_000 }),
  })
  .superRefine((d, ctx) => {
    const gw = d.network?.gateway;
    if (gw && d.network && !d.network.addresses.some((a) => sameSubnet(a, gw))) {
      ctx.addIssue({
        code: 'custom',
        path: ['network', 'gateway'],
        message: `${gw} is not in the subnet of any address`,
      });
    }
  });

export type VserverDefinition = z.infer<typeof vserverDefinitionSchema>;
/** Pieces the cluster file (src/cluster/config.ts) reuses; the rest it takes from `vserverDefinitionSchema.shape`. */
export { duration as durationSchema, ipv4 as ipv4Schema, NAME as VSERVER_NAME, size as sizeSchema };
export type HealthCheck = z.infer<typeof healthCheckSchema>;

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

export function sameSubnet(cidrText: string, ip: string): boolean {
  const [addr, p] = cidrText.split('/');
  const prefix = Number(p);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return (ipToInt(addr ?? '') & mask) >>> 0 === (ipToInt(ip) & mask) >>> 0;
}

/** The signal `stop` sends first: systemd wants SIGRTMIN+3 to shut down cleanly. */
export function stopSignal(def: VserverDefinition): string {
  if (def.stop.signal) return def.stop.signal.startsWith('SIG') ? def.stop.signal : `SIG${def.stop.signal}`;
  const cmd = def.command[0] ?? '';
  return /(^|\/)(init|systemd)$/.test(cmd) ? 'SIGRTMIN+3' : 'SIGTERM';
}
