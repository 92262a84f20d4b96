import type { StoredAlert } from '../store/history.js';
import type { ModemView } from '../store/modems.js';
import type { TokenGrant } from '../store/tokens.js';
import type { ServerMessage } from './protocol.js';

/**
 * What the bearer of a token may see and do (pure; the inspector's hooks and the hub apply it):
 * - `admin` (MODEMFLEET_API_TOKEN, or a created admin token): everything;
 * - `read-only`: every modem, no password anywhere, no command (403);
 * - `reseller`: only its modems (their passwords included) and commands on them; nothing farm-wide.
 */
export type Access =
  | { scope: 'admin'; tokenId: number | null; name: string }
  | { scope: 'read-only'; tokenId: number; name: string }
  | { scope: 'reseller'; tokenId: number; name: string; modems: ReadonlySet<string> };

/** The configuration's token (MODEMFLEET_API_TOKEN or the state dir's api-token file). */
export const CONFIG_ADMIN: Access = { scope: 'admin', tokenId: null, name: 'api-token' };

export function accessOf(grant: TokenGrant): Access {
  const base = { tokenId: grant.id, name: grant.name };
  if (grant.scope === 'reseller') return { ...base, scope: 'reseller', modems: new Set(grant.modems) };
  return { ...base, scope: grant.scope };
}

/** The modem (or a farm-wide thing: null) is visible to this token. */
export function sees(access: Access, imei: string | null): boolean {
  if (access.scope !== 'reseller') return true;
  return imei !== null && access.modems.has(imei);
}

export const seesPasswords = (access: Access): boolean => access.scope !== 'read-only';

/** May queue commands and change settings (on the modems it sees). */
export const mayAct = (access: Access): boolean => access.scope !== 'read-only';

/** The modem as this token sees it: the password hidden (null) from a read-only token. */
export function viewModem<M extends Pick<ModemView, 'proxy'>>(access: Access, modem: M): M {
  if (seesPasswords(access) || !modem.proxy) return modem;
  return { ...modem, proxy: { ...modem.proxy, password: null } };
}

export function viewModems<M extends Pick<ModemView, 'proxy' | 'imei'>>(
  access: Access,
  modems: readonly M[],
): M[] {
  return modems.filter((m) => sees(access, m.imei)).map((m) => viewModem(access, m));
}

export function viewAlerts(access: Access, alerts: readonly StoredAlert[]): StoredAlert[] {
  return alerts.filter((a) => sees(access, a.imei));
}

/**
 * A stream message as this token sees it, or null when it must not get it (another modem of a
 * reseller; host events and farm-wide alerts to a reseller).
 */
export function viewMessage(access: Access, message: ServerMessage): ServerMessage | null {
  switch (message.type) {
    case 'snapshot':
      return {
        ...message,
        modems: viewModems(access, message.modems),
        alerts: viewAlerts(access, message.alerts),
      };
    case 'snapshot_rest':
      return { ...message, modems: viewModems(access, message.modems) };
    case 'modem':
      return sees(access, message.modem.imei)
        ? { ...message, modem: viewModem(access, message.modem) }
        : null;
    case 'transition':
    case 'health':
    case 'command':
    case 'alert':
      return sees(access, message.imei) ? message : null;
    case 'host':
      return access.scope === 'reseller' ? null : message;
    case 'resync':
    case 'pong':
    case 'error':
      return message;
  }
}

/** What `GET /api/whoami` tells the page (so it hides what this token cannot do). */
export function describeAccess(access: Access): {
  name: string;
  scope: Access['scope'];
  passwords: boolean;
  commands: boolean;
  modems: string[] | null;
} {
  return {
    name: access.name,
    scope: access.scope,
    passwords: seesPasswords(access),
    commands: mayAct(access),
    modems: access.scope === 'reseller' ? [...access.modems].sort() : null,
  };
}
