import { pino } from 'pino';

/**
 * Structured JSON logs to stderr (one object per line), so journald or any collector can read them.
 * Every state change of a resource is logged as an event with a `reason`.
 */
export type Logger = pino.Logger;

export function createLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      base: { component, pid: process.pid, ...bindings },
      level: process.env.CVSERVER_LOG_LEVEL ?? 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
