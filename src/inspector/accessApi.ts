import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Store } from '../store/store.js';
import { sleep } from '../util/time.js';
import { rateLimited, type ApiDeps } from './api.js';

/** HTTP status of the access routes' error codes (merged into httpErrors.ts). */
export const ACCESS_API_STATUS: Readonly<Record<string, number>> = {
  invalid_login: 422,
  invalid_allowlist: 422,
  invalid_limits: 422,
  login_exists: 409,
  too_many_logins: 409,
  primary_login: 409,
  backend_unsupported: 409,
  unknown_login: 404,
};

const imeiParams = {
  type: 'object',
  properties: { imei: { type: 'string', pattern: '^[0-9]{15}$' } },
  required: ['imei'],
} as const;

const waitQuery = {
  type: 'object',
  properties: { wait: { type: 'integer', minimum: 0, maximum: 60 } },
  additionalProperties: false,
} as const;

type Wait = { wait?: number };

/**
 * Waits until the host that serves the modem applied a change (the `credentials` command queued
 * with it), at most `wait` seconds (default 15): 200 with the command's outcome, else 202.
 */
async function applied(
  store: Store,
  commandId: number,
  req: FastifyRequest<{ Querystring: Wait }>,
  reply: FastifyReply,
  body: Record<string, unknown>,
  createdCode = 200,
): Promise<FastifyReply> {
  const deadline = Date.now() + (req.query.wait ?? 15) * 1000;
  for (;;) {
    const command = await store.command(commandId);
    const status = command?.status ?? 'pending';
    const finished = status === 'done' || status === 'failed';
    if (finished || Date.now() >= deadline || req.socket.destroyed)
      return reply
        .code(finished ? createdCode : 202)
        .send({ ...body, command: { id: commandId, status, result: command?.result ?? null } });
    await sleep(100);
  }
}

/**
 * A modem's access beyond its own login (src/proxyAccess.ts): its logins (`GET|POST
 * /api/modems/:imei/logins`, `DELETE .../logins/:username`), allowlist (`GET|PUT .../allowlist`)
 * and speed limits in kbit/s (`GET|PUT .../limits`). A change is stored with a command for the host
 * that serves the modem; the answer waits until that host applied it (`?wait=`, 200) or says 202.
 * Scopes (authorize.ts): read-only tokens read the allowlist and limits but not the logins (they
 * hold passwords) and change nothing; a reseller its own modems only.
 */
export function registerAccessApi(app: FastifyInstance, deps: ApiDeps): void {
  const { store } = deps;

  app.get(
    '/api/modems/:imei/logins',
    { schema: { params: imeiParams } },
    async (req: FastifyRequest<{ Params: { imei: string } }>) => store.logins(req.params.imei),
  );

  app.post(
    '/api/modems/:imei/logins',
    { schema: { params: imeiParams, querystring: waitQuery, body: { type: 'object', maxProperties: 8 } } },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: Wait; Body: unknown }>, reply) => {
      const { imei } = req.params;
      await store.access(imei); // 404 before it costs a token
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const { login, commandId } = await store.addLogin(imei, req.body, `api:${req.ip}`);
      return applied(store, commandId, req, reply, { imei, ...login }, 201);
    },
  );

  app.delete(
    '/api/modems/:imei/logins/:username',
    {
      schema: {
        params: {
          type: 'object',
          properties: {
            imei: { type: 'string', pattern: '^[0-9]{15}$' },
            username: { type: 'string', maxLength: 64 },
          },
          required: ['imei', 'username'],
        },
        querystring: waitQuery,
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string; username: string }; Querystring: Wait }>, reply) => {
      const { imei, username } = req.params;
      await store.access(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const { commandId } = await store.removeLogin(imei, username, `api:${req.ip}`);
      return applied(store, commandId, req, reply, { imei, username, removed: true });
    },
  );

  app.get(
    '/api/modems/:imei/allowlist',
    { schema: { params: imeiParams } },
    async (req: FastifyRequest<{ Params: { imei: string } }>) =>
      (await store.access(req.params.imei)).allowlist,
  );

  app.put(
    '/api/modems/:imei/allowlist',
    { schema: { params: imeiParams, querystring: waitQuery, body: { type: 'array', maxItems: 64 } } },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: Wait; Body: unknown }>, reply) => {
      const { imei } = req.params;
      await store.access(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const { commandId, allowlist, updatedAt } = await store.setAllowlist(imei, req.body, `api:${req.ip}`);
      return applied(store, commandId, req, reply, { imei, allowlist, updatedAt });
    },
  );

  app.get(
    '/api/modems/:imei/limits',
    { schema: { params: imeiParams } },
    async (req: FastifyRequest<{ Params: { imei: string } }>) => {
      const access = await store.access(req.params.imei);
      return { ...access.limits, unit: 'kbit/s' };
    },
  );

  app.put(
    '/api/modems/:imei/limits',
    { schema: { params: imeiParams, querystring: waitQuery, body: { type: 'object', maxProperties: 4 } } },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: Wait; Body: unknown }>, reply) => {
      const { imei } = req.params;
      await store.access(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const { commandId, limits, updatedAt } = await store.setLimits(imei, req.body, `api:${req.ip}`);
      return applied(store, commandId, req, reply, { imei, ...limits, unit: 'kbit/s', updatedAt });
    },
  );
}
