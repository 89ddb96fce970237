/**
 * Fills Node's compile cache (NODE_COMPILE_CACHE, set by bin/cvserver) with every module under src/,
 * so that no cvserver process — the agent, its worker thread, volume daemons, probes — has to load the
 * TypeScript stripper (~17 MiB of RSS per process or thread) on its first start. Entry points run only
 * as `import.meta.main`, so importing them here runs nothing. scripts/setup runs this.
 */
import { readdirSync } from 'node:fs';
import { flushCompileCache, getCompileCacheDir } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const src = join(import.meta.dirname, '..', 'src');
if (!getCompileCacheDir()) {
  process.stderr.write('warm-compile-cache: NODE_COMPILE_CACHE is not set; nothing to do\n');
  process.exit(0);
}
const files = readdirSync(src, { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.ts'))
  .sort();
for (const f of files) await import(pathToFileURL(join(src, f)).href);
flushCompileCache();
process.stdout.write(`warm-compile-cache: ${files.length} modules in ${getCompileCacheDir()}\n`);
