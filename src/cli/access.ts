import { IMEI_PATTERN } from '../ids.js';
import type { Store } from '../store/store.js';
import { isTokenScope, TOKEN_NAME_PATTERN, TOKEN_SCOPES, type StoredToken } from '../store/tokens.js';
import { sleep } from '../util/time.js';
import { UsageError } from './exitCodes.js';

export const CREDENTIALS_USAGE = 'credentials IMEI [--rotate [--wait SECONDS]] [--config FILE]';
export const TOKEN_USAGE =
  'token create NAME --scope admin|read-only|reseller [--modems IMEI,...] | token list [--json] | token revoke NAME [--config FILE]';

/** How long `credentials --rotate` waits by default for the modem's host to apply the new password. */
export const ROTATE_WAIT_SECONDS = 15;

/**
 * `credentials IMEI`: the modem's proxy login; with `--rotate` a new password first, applied by the
 * host that serves the modem (the old password is refused from then on). One JSON line.
 */
export async function credentialsCommand(
  store: Store,
  imei: string,
  rotate: boolean,
  requestedBy: string,
  waitSeconds = ROTATE_WAIT_SECONDS,
): Promise<Record<string, unknown>> {
  if (!IMEI_PATTERN.test(imei)) throw new UsageError('imei must be 15 digits');
  if (!rotate) return { ...(await store.credentials(imei)) };
  const rotated = await store.rotateCredentials(imei, requestedBy);
  const deadline = Date.now() + waitSeconds * 1000;
  let command = await store.command(rotated.commandId);
  while (command && (command.status === 'pending' || command.status === 'running') && Date.now() < deadline) {
    await sleep(100);
    command = await store.command(rotated.commandId);
  }
  const { commandId, ...login } = rotated;
  return {
    ...login,
    command: { id: commandId, status: command?.status ?? 'pending', result: command?.result ?? null },
  };
}

const list = (value: unknown): string[] =>
  typeof value === 'string'
    ? value
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x.length > 0)
    : [];

/** `token create|list|revoke`: its output (JSON for create and revoke; a table or JSON for list). */
export async function tokenCommand(
  store: Store,
  positionals: readonly string[],
  values: Record<string, unknown>,
  createdBy: string,
): Promise<string> {
  const [action, name] = positionals;
  const scope = values['scope'];
  const modems = values['modems'];
  if (action === 'list') {
    if (name !== undefined || scope !== undefined || modems !== undefined)
      throw new UsageError(`token list takes no name, --scope or --modems; usage: modemfleet ${TOKEN_USAGE}`);
    const tokens = await store.tokens();
    return values['json'] ? JSON.stringify(tokens) : formatTokens(tokens);
  }
  if (name === undefined) throw new UsageError(`a token name; usage: modemfleet ${TOKEN_USAGE}`);
  if (!TOKEN_NAME_PATTERN.test(name))
    throw new UsageError(
      `token name '${name.slice(0, 64)}' is malformed: 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
    );
  if (action === 'create') {
    if (typeof scope !== 'string') throw new UsageError(`--scope ${TOKEN_SCOPES.join('|')} is required`);
    if (!isTokenScope(scope))
      throw new UsageError(
        `unknown scope '${scope.slice(0, 32)}'; expected one of ${TOKEN_SCOPES.join(', ')}`,
      );
    const { token, stored } = await store.createToken({ name, scope, modems: list(modems), createdBy });
    return JSON.stringify({
      name: stored.name,
      scope: stored.scope,
      modems: stored.modems,
      token,
      note: 'the token is shown only now; only its SHA-256 is stored',
    });
  }
  if (action === 'revoke') {
    if (scope !== undefined || modems !== undefined)
      throw new UsageError(`token revoke takes only a name; usage: modemfleet ${TOKEN_USAGE}`);
    const stored = await store.revokeToken(name);
    return JSON.stringify({ name: stored.name, scope: stored.scope, revokedAt: stored.revokedAt });
  }
  throw new UsageError(`usage: modemfleet ${TOKEN_USAGE}`);
}

const day = (d: Date | null): string => (d ? d.toISOString().slice(0, 19).replace('T', ' ') : '-');

export function formatTokens(tokens: readonly StoredToken[]): string {
  if (tokens.length === 0)
    return 'no tokens (MODEMFLEET_API_TOKEN or STATE_DIR/api-token is the admin token)';
  const rows = [
    ['NAME', 'SCOPE', 'MODEMS', 'CREATED', 'LAST USED', 'REVOKED'],
    ...tokens.map((t) => [
      t.name,
      t.scope,
      t.scope === 'reseller' ? String(t.modems.length) : 'all',
      day(t.createdAt),
      day(t.lastUsedAt),
      day(t.revokedAt),
    ]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
