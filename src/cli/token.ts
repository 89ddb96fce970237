/** `cvserver token create|list|revoke`: bearer tokens for the HTTP API and dashboard (docs/http.md). */
import type { Command } from 'commander';
import { SCOPES, type Scope, type TokenInfo } from '../agent/http/tokens.ts';
import { UserError } from '../lib/errors.ts';
import { askAgent, operatorName } from './agent-client.ts';
import { emit, table } from './output.ts';

export function registerTokenCommands(program: Command): void {
  const token = program
    .command('token')
    .description('bearer tokens for the HTTP API, dashboard and /metrics');

  token
    .command('create <name>')
    .description('make a token (shown once; only its SHA-256 is stored, in the cluster)')
    .option('--scope <scope>', `what it may do: ${SCOPES.join(' or ')} (admin: actions too)`, 'read')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { scope: string; json?: boolean }) => {
      if (!(SCOPES as readonly string[]).includes(o.scope))
        throw new UserError(`--scope: expected ${SCOPES.join(' or ')}, got "${o.scope}"`);
      const r = (await askAgent({
        op: 'token-create',
        name,
        scope: o.scope as Scope,
        by: operatorName(),
      })) as {
        name: string;
        scope: Scope;
        token: string;
      };
      emit(!!o.json, r, () =>
        [
          r.token,
          `token ${r.name} (${r.scope}): keep it now, it is not shown again (use: Authorization: Bearer <token>)`,
        ].join('\n'),
      );
    });

  token
    .command('list')
    .description('the tokens: name, scope, who made it and when (never the token)')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = (await askAgent({ op: 'token-list' })) as { tokens: TokenInfo[] };
      emit(!!o.json, r, () =>
        r.tokens.length === 0
          ? 'no tokens (cvserver token create NAME --scope read|admin)'
          : table(
              ['NAME', 'SCOPE', 'CREATED', 'BY'],
              r.tokens.map((t) => [t.name, t.scope, new Date(t.createdAt).toISOString(), t.createdBy]),
            ),
      );
    });

  token
    .command('revoke <name>')
    .description('revoke a token: refused by every agent within 2 s')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await askAgent({ op: 'token-revoke', name, by: operatorName() });
      emit(!!o.json, r, () => `token ${name} revoked`);
    });
}
