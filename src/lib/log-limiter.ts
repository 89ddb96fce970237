/**
 * Caps how often one message may be logged: input from the network (refused handshakes, bad frames)
 * must not let a stranger fill the disk through our log. Per message text, at most `max` lines per
 * window; the rest are counted and reported once when the window ends.
 */
export interface LineLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface LimiterOptions {
  max?: number;
  windowMs?: number;
  now?: () => number;
}

export function rateLimited(log: LineLog, o: LimiterOptions = {}): LineLog {
  const max = o.max ?? 20;
  const windowMs = o.windowMs ?? 60_000;
  const now = o.now ?? Date.now;
  const windows = new Map<string, { start: number; count: number }>();
  const emit = (level: 'info' | 'warn', obj: object, msg: string): void => {
    const t = now();
    let w = windows.get(msg);
    if (w && t - w.start >= windowMs) {
      if (w.count > max) log.warn({ suppressed: w.count - max, windowMs }, `suppressed: ${msg}`);
      w = undefined;
    }
    if (!w) {
      w = { start: t, count: 0 };
      windows.set(msg, w);
    }
    w.count++;
    if (w.count <= max) log[level](obj, msg);
  };
  return {
    info: (obj, msg) => emit('info', obj, msg),
    warn: (obj, msg) => emit('warn', obj, msg),
  };
}
