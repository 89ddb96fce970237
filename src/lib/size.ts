import { UserError } from './errors.ts';

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KB: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TB: 1024 ** 4,
  TIB: 1024 ** 4,
};

/**
 * Parses a byte size such as `2G`, `512M`, `64KiB` or `4096` (binary units: K = 1024).
 * Returns undefined when the text is not a size; `parseSizeOrThrow` names the field instead.
 */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return undefined;
  const unit = UNITS[m[2]!.toUpperCase()];
  if (unit === undefined) return undefined;
  const bytes = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

export function parseSizeOrThrow(text: string, what: string): number {
  const bytes = parseSize(text);
  if (bytes === undefined) {
    throw new UserError(
      `${what}: "${text}" is not a size (expected a number with an optional unit K, M, G or T, e.g. 2G)`,
    );
  }
  return bytes;
}

/** 1536 → "1.5K", 2147483648 → "2G": short, for humans. */
export function formatSize(bytes: number): string {
  const units = ['', 'K', 'M', 'G', 'T'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1);
  return `${text}${units[i]}${i === 0 ? 'B' : ''}`;
}
