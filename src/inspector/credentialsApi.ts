import type { FastifyInstance, FastifyRequest } from 'fastify';
import { sleep } from '../util/time.js';
import { rateLimited, type ApiDeps } from './api.js';

const imeiParams = {
  type: 'object',
  properties: { imei: { type: 'string', pattern: '^[0-9]{15}$' } },
  required: ['imei'],
} as const;

/** Longest a rotation waits for the owning host by default, and at most (`?wait=`), seconds. */
const DEFAULT_WAIT_SECONDS = 15;
const MAX_WAIT_SECONDS = 60;

/**
 * A modem's proxy login: shown (`GET`) and rotated (`POST`) by admin tokens and by a reseller for
 * its own modems (the scopes are enforced in authorize.ts; a read-only token gets 403). A rotation
 * stores a new password and queues a `credentials` command for the host that serves the modem (any
 * host of the farm); the answer waits until that host has applied it (200: the old password is
 * refused from then on) or `wait` seconds pass (202: the command id to follow).
 */
export function registerCredentialsApi(app: FastifyInstance, deps: ApiDeps): void {
  const { store } = deps;

  app.get(
    '/api/modems/:imei/credentials',
    { schema: { params: imeiParams } },
    async (req: FastifyRequest<{ Params: { imei: string } }>) => {
      const c = await store.credentials(req.params.imei);
      return {
        imei: c.imei,
        host: c.host,
        username: c.username,
        password: c.password,
        rotatedAt: c.rotatedAt,
      };
    },
  );

  app.post(
    '/api/modems/:imei/credentials',
    {
      schema: {
        params: imeiParams,
        querystring: {
          type: 'object',
          properties: { wait: { type: 'integer', minimum: 0, maximum: MAX_WAIT_SECONDS } },
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: { wait?: number } }>, reply) => {
      const { imei } = req.params;
      // the modem must exist before it costs a token from the rate limiter
      await store.credentials(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const rotated = await store.rotateCredentials(imei, `api:${req.ip}`);
      const deadline = Date.now() + (req.query.wait ?? DEFAULT_WAIT_SECONDS) * 1000;
      for (;;) {
        const command = await store.command(rotated.commandId);
        const status = command?.status ?? 'pending';
        const finished = status === 'done' || status === 'failed';
        if (finished || Date.now() >= deadline || req.raw.destroyed)
          return reply.code(finished ? 200 : 202).send({
            imei,
            host: rotated.host,
            username: rotated.username,
            password: rotated.password,
            rotatedAt: rotated.rotatedAt,
            command: { id: rotated.commandId, status, result: command?.result ?? null },
          });
        await sleep(100);
      }
    },
  );
}
