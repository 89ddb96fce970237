/**
 * Runs one tcp/http probe and prints its result as JSON. The supervisor starts it with
 * `nsenter --net=<netns>` when the vserver's bridge lives in a named network namespace.
 */
import { probeHttp, probeTcp } from './probe.ts';

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? '{}') as {
    kind: 'tcp' | 'http';
    host: string;
    port: number;
    url: string;
    expect: number;
    body?: string;
    timeout: number;
  };
  const result =
    spec.kind === 'tcp'
      ? await probeTcp(spec.host, spec.port, spec.timeout)
      : await probeHttp(spec.url, spec.expect, spec.body, spec.timeout);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
