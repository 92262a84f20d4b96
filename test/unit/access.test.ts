import { describe, expect, it } from 'vitest';
import { accessOf, describeAccess, viewMessage, type Access } from '../../src/inspector/access.js';
import { messagesOf, revokedTokenId, type ServerMessage } from '../../src/inspector/protocol.js';
import type { ModemView } from '../../src/store/modems.js';

const A = '356000000000001';
const B = '356000000000002';

const modem = (imei: string): ModemView =>
  ({
    imei,
    proxy: { host: '127.0.0.1', httpPort: 1, socksPort: 2, username: 'u1234', password: `pw-${imei}` },
  }) as ModemView;

const admin = accessOf({ id: 1, name: 'ops', scope: 'admin', modems: [] });
const readOnly = accessOf({ id: 2, name: 'noc', scope: 'read-only', modems: [] });
const reseller = accessOf({ id: 3, name: 'acme', scope: 'reseller', modems: [A] });

const snapshot: ServerMessage = {
  type: 'snapshot',
  at: 'now',
  modems: [modem(A), modem(B)],
  alerts: [
    {
      id: 1,
      host: 'h',
      imei: A,
      kind: 'k',
      severity: 'warning',
      message: '',
      detail: {},
      raisedAt: new Date(0),
      resolvedAt: null,
      silenced: false,
      ackedAt: null,
      ackedBy: null,
    },
    {
      id: 2,
      host: 'h',
      imei: null,
      kind: 'k',
      severity: 'warning',
      message: '',
      detail: {},
      raisedAt: new Date(0),
      resolvedAt: null,
      silenced: false,
      ackedAt: null,
      ackedBy: null,
    },
  ],
};

const imeis = (access: Access) => {
  const v = viewMessage(access, snapshot);
  return v?.type === 'snapshot' ? v.modems.map((m) => [m.imei, m.proxy?.password]) : null;
};

describe('token scopes (pure views)', () => {
  it('admin sees everything; read-only every modem without passwords; a reseller only its own', () => {
    expect(imeis(admin)).toEqual([
      [A, `pw-${A}`],
      [B, `pw-${B}`],
    ]);
    expect(imeis(readOnly)).toEqual([
      [A, null],
      [B, null],
    ]);
    expect(imeis(reseller)).toEqual([[A, `pw-${A}`]]);
    const v = viewMessage(reseller, snapshot);
    expect(v?.type === 'snapshot' ? v.alerts.map((a) => a.id) : null).toEqual([1]);
    // the snapshot itself is not changed for the next client
    expect(snapshot.type === 'snapshot' ? snapshot.modems[0]?.proxy?.password : null).toBe(`pw-${A}`);
  });

  it('stream messages: other modems and host events hidden from a reseller; rows redacted for read-only', () => {
    const t = (imei: string): ServerMessage => ({
      type: 'transition',
      imei,
      seq: 1,
      from: null,
      to: 'online',
      event: 'x',
      at: 'now',
      host: 'h',
    });
    expect(viewMessage(reseller, t(A))).not.toBeNull();
    expect(viewMessage(reseller, t(B))).toBeNull();
    expect(viewMessage(reseller, { type: 'host', event: 'host_started', host: 'h', at: 'now' })).toBeNull();
    expect(
      viewMessage(reseller, { type: 'command', id: 1, imei: B, kind: 'rotate', status: 'done' }),
    ).toBeNull();
    const row = viewMessage(readOnly, { type: 'modem', modem: modem(B) });
    expect(row?.type === 'modem' ? row.modem.proxy?.password : 'x').toBeNull();
    expect(viewMessage(readOnly, { type: 'pong' })).toEqual({ type: 'pong' });
  });

  it('whoami says what the page may offer', () => {
    expect(describeAccess(readOnly)).toEqual({
      name: 'noc',
      scope: 'read-only',
      passwords: false,
      commands: false,
      modems: null,
    });
    expect(describeAccess(reseller)).toMatchObject({ scope: 'reseller', passwords: true, modems: [A] });
  });

  it('a revocation notification names the token; nothing of it is forwarded; other shapes are ignored', () => {
    const n = (payload: Record<string, unknown>) => ({ channel: 'api_tokens' as const, payload });
    expect(revokedTokenId(n({ id: 7, event: 'revoked' }))).toBe(7);
    expect(messagesOf(n({ id: 7, event: 'revoked' }))).toEqual([]);
    expect(revokedTokenId(n({ id: '7', event: 'revoked' }))).toBeUndefined();
    expect(revokedTokenId(n({ id: 7, event: 'created' }))).toBeUndefined();
    expect(revokedTokenId(n({ id: -1, event: 'revoked' }))).toBeUndefined();
    expect(
      revokedTokenId({ channel: 'modem_commands', payload: { id: 7, event: 'revoked' } }),
    ).toBeUndefined();
  });
});
