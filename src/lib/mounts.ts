import { readFileSync } from 'node:fs';

/** One line of /proc/mounts. */
export interface MountEntry {
  source: string;
  dir: string;
  fstype: string;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal (`\040`). */
export function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** The mounts this process sees, with their paths unescaped. */
export function readMounts(): MountEntry[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [source = '', dir = '', fstype = ''] = line.split(' ');
      return { source: unescapeMount(source), dir: unescapeMount(dir), fstype };
    });
}
