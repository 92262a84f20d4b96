import { IMEI_PATTERN } from '../ids.js';
import type { Store } from '../store/store.js';
import { sleep } from '../util/time.js';
import { UsageError } from './exitCodes.js';

export const LOGINS_USAGE =
  'logins IMEI [add USER [--password P] [--expires ISO-TIME] [--ports http,socks] | remove USER] [--wait SECONDS] [--config FILE]';
export const ALLOWLIST_USAGE = 'allowlist IMEI [CIDR,CIDR,... | --clear] [--wait SECONDS] [--config FILE]';
export const LIMITS_USAGE =
  'limits IMEI [--download KBITS|none] [--upload KBITS|none] [--wait SECONDS] [--config FILE]';

/** How long a change waits by default for the modem's host to apply it. */
export const ACCESS_WAIT_SECONDS = 15;

/** The command queued with a change, once finished or after `waitSeconds`. */
async function outcome(
  store: Store,
  commandId: number,
  waitSeconds: number,
): Promise<{ id: number; status: string; result: unknown }> {
  const deadline = Date.now() + waitSeconds * 1000;
  let command = await store.command(commandId);
  while (command && (command.status === 'pending' || command.status === 'running') && Date.now() < deadline) {
    await sleep(100);
    command = await store.command(commandId);
  }
  return { id: commandId, status: command?.status ?? 'pending', result: command?.result ?? null };
}

const imeiOf = (imei: string | undefined): string => {
  if (!imei || !IMEI_PATTERN.test(imei)) throw new UsageError('imei must be 15 digits');
  return imei;
};

const stringValue = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

/** `logins IMEI [add USER ... | remove USER]`: the list, or the change and its outcome. One JSON line. */
export async function loginsCommand(
  store: Store,
  positionals: readonly string[],
  values: Record<string, unknown>,
  requestedBy: string,
  waitSeconds = ACCESS_WAIT_SECONDS,
): Promise<unknown> {
  const [imeiText, action, username, extra] = positionals;
  const imei = imeiOf(imeiText);
  const password = stringValue(values['password']);
  const expires = stringValue(values['expires']);
  const ports = stringValue(values['ports']);
  if (extra !== undefined) throw new UsageError(`usage: ${LOGINS_USAGE}`);
  if (action === undefined) {
    if (password ?? expires ?? ports) throw new UsageError('--password, --expires and --ports go with add');
    return store.logins(imei);
  }
  if (username === undefined) throw new UsageError(`${action} needs a USER`);
  if (action === 'add') {
    const request = {
      username,
      ...(password !== undefined ? { password } : {}),
      ...(expires !== undefined ? { expiresAt: expires } : {}),
      ...(ports !== undefined ? { ports: ports.split(',').map((p) => p.trim()) } : {}),
    };
    const { login, commandId } = await store.addLogin(imei, request, requestedBy);
    return { imei, ...login, command: await outcome(store, commandId, waitSeconds) };
  }
  if (action === 'remove') {
    if (password ?? expires ?? ports) throw new UsageError('--password, --expires and --ports go with add');
    const { commandId } = await store.removeLogin(imei, username, requestedBy);
    return { imei, username, removed: true, command: await outcome(store, commandId, waitSeconds) };
  }
  throw new UsageError(`unknown action '${action.slice(0, 16)}': add or remove`);
}

/** `allowlist IMEI [CIDR,... | --clear]`: the allowlist, or the new one and its outcome. */
export async function allowlistCommand(
  store: Store,
  positionals: readonly string[],
  values: Record<string, unknown>,
  requestedBy: string,
  waitSeconds = ACCESS_WAIT_SECONDS,
): Promise<unknown> {
  const [imeiText, list] = positionals;
  const imei = imeiOf(imeiText);
  const clear = values['clear'] === true;
  if (clear && list !== undefined) throw new UsageError('either CIDRs or --clear');
  if (!clear && list === undefined) return (await store.access(imei)).allowlist;
  const entries = clear
    ? []
    : (list ?? '')
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x.length > 0);
  const { commandId, allowlist } = await store.setAllowlist(imei, entries, requestedBy);
  return { imei, allowlist, command: await outcome(store, commandId, waitSeconds) };
}

/** `limits IMEI [--download KBITS|none] [--upload KBITS|none]`: kbit/s (1000 bits per second). */
export async function limitsCommand(
  store: Store,
  positionals: readonly string[],
  values: Record<string, unknown>,
  requestedBy: string,
  waitSeconds = ACCESS_WAIT_SECONDS,
): Promise<unknown> {
  const imei = imeiOf(positionals[0]);
  const parse = (name: string): number | null | undefined => {
    const text = stringValue(values[name]);
    if (text === undefined) return undefined;
    if (text === 'none') return null;
    if (!/^\d{1,9}$/.test(text)) throw new UsageError(`--${name}: kbit/s as a whole number, or none`);
    return Number(text);
  };
  const download = parse('download');
  const upload = parse('upload');
  const current = await store.access(imei);
  if (download === undefined && upload === undefined) return { imei, ...current.limits, unit: 'kbit/s' };
  const { commandId, limits } = await store.setLimits(
    imei,
    {
      downloadKbps: download === undefined ? current.limits.downloadKbps : download,
      uploadKbps: upload === undefined ? current.limits.uploadKbps : upload,
    },
    requestedBy,
  );
  return { imei, ...limits, unit: 'kbit/s', command: await outcome(store, commandId, waitSeconds) };
}
