import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { quotaView } from '../store/quotas.js';
import { HOST_ID_PATTERN, IMEI_PATTERN } from '../ids.js';
import type { Store } from '../store/store.js';
import { COMMAND_KINDS } from '../store/types.js';
import { ModemfleetError } from '../util/errors.js';
import { sleep } from '../util/time.js';
import type { Access } from './access.js';
import { requestAccess } from './authorize.js';
import type { RateLimiter } from './rateLimit.js';

export interface ApiDeps {
  store: Store;
  /** Commands and schedule changes with the bearer token, per modem. */
  operatorLimiter: RateLimiter;
  /** Rotation-link requests, per link (one active link per modem): a budget of their own. */
  linkLimiter: RateLimiter;
  /** Longest `?wait=` a rotation link may ask for, seconds. */
  rotateWaitMaxSeconds: number;
  /** The server's idle timeout: a link's `?wait=` stretches it for its own connection. */
  idleTimeoutMs: number;
  /** Every modem as the token sees it, from the rows the live stream keeps (`Hub.listing`). */
  listing?: ((access: Access) => Promise<Buffer>) | undefined;
}

/** Said wherever a rotation link is handed out (the API's answer, the page). */
export const ROTATION_LINK_WARNING =
  'Anyone who has this link can rotate the modem. Chat apps, mail scanners and link previewers open ' +
  'links they see (GET), which rotates the modem: give scripts POST, and do not paste the link in chats.';

const imeiParams = {
  type: 'object',
  properties: { imei: { type: 'string', pattern: '^[0-9]{15}$' } },
  required: ['imei'],
} as const;

const MAX_INT = 2 ** 53 - 1;

/** `GET /api/modems` with `after` but no `limit`. */
const DEFAULT_PAGE = 100;

interface ModemsQuery {
  state?: string;
  host?: string;
  q?: string;
  limit?: number;
  after?: string;
}

type ImeiRequest = FastifyRequest<{ Params: { imei: string } }>;

/** 404 unless the modem exists (so an unknown IMEI never looks like an empty history). */
async function requireModem(store: Store, imei: string) {
  const [modem] = await store.modems({ imei });
  if (!modem) throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
  return modem;
}

export function rateLimited(
  limiter: RateLimiter,
  key: string,
  reply: FastifyReply,
  what = `commands for ${key}`,
): boolean {
  const waitMs = limiter.take(key);
  if (waitMs === 0) return false;
  void reply
    .code(429)
    .header('retry-after', String(Math.ceil(waitMs / 1000)))
    .send({
      error: 'rate_limited',
      message: `too many ${what}; retry in ${Math.ceil(waitMs / 1000)} s`,
    });
  return true;
}

/** A rotation link's key in the link limiter: its secret's hash (no secret kept in memory). */
const linkKey = (secret: string): string => createHash('sha256').update(secret).digest('base64url');

/** The JSON API under /api (bearer token) and the rotation links (their own secret). */
export function registerApi(app: FastifyInstance, deps: ApiDeps): void {
  const { store } = deps;

  app.get(
    '/api/modems',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: {
            state: { type: 'string', pattern: '^[a-z]+(\\.[a-zA-Z]+)*$', maxLength: 64 },
            host: { type: 'string', pattern: HOST_ID_PATTERN.source },
            q: { type: 'string', minLength: 1, maxLength: 64 },
            // paging is opt-in: with `limit` or `after` the answer is { modems, next }
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            after: { type: 'string', pattern: IMEI_PATTERN.source },
          },
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Querystring: ModemsQuery }>, reply: FastifyReply) => {
      const { state, host, q, limit, after } = req.query;
      const access = requestAccess(req);
      const listing = {
        ...(state !== undefined ? { state } : {}),
        ...(host !== undefined ? { host } : {}),
        ...(q !== undefined ? { q } : {}),
        // a reseller's listing is its modems only: pages and their cursors never name another's
        ...(access.scope === 'reseller' ? { imeis: [...access.modems] } : {}),
      };
      if (limit === undefined && after === undefined) {
        // every modem: made from the rows in memory (as the WebSocket's snapshot), already viewed
        if (deps.listing && state === undefined && host === undefined && q === undefined)
          return reply.type('application/json; charset=utf-8').send(await deps.listing(access));
        return store.modems(listing);
      }
      const pageSize = limit ?? DEFAULT_PAGE;
      // one more than asked tells whether there is a next page
      const rows = await store.modems({ ...listing, limit: pageSize + 1, ...(after ? { after } : {}) });
      const modems = rows.slice(0, pageSize);
      return { modems, next: rows.length > pageSize ? (modems.at(-1)?.imei ?? null) : null };
    },
  );

  app.get('/api/modems/:imei', { schema: { params: imeiParams } }, async (req: ImeiRequest) => {
    const modem = await requireModem(store, req.params.imei);
    const [lastError, commands, rotationLink, schedule, quota] = await Promise.all([
      store.lastError(modem.imei),
      store.recentCommands(modem.imei, 10),
      store.rotationLinkInfo(modem.imei),
      store.schedule(modem.imei),
      store.quota(modem.imei),
    ]);
    return { ...modem, lastError, commands, rotationLink, schedule, quota: quota && quotaView(quota) };
  });

  // the modem's own rotation schedule (the farm default, config rotation.schedule, applies without one)
  app.put(
    '/api/modems/:imei/schedule',
    { schema: { params: imeiParams, body: { type: 'object', maxProperties: 8 } } },
    async (req: FastifyRequest<{ Params: { imei: string }; Body: unknown }>, reply) => {
      const { imei } = req.params;
      await requireModem(store, imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const schedule = await store.setSchedule(imei, req.body, `api:${req.ip}`);
      return reply.code(200).send({ imei, schedule });
    },
  );

  app.delete(
    '/api/modems/:imei/schedule',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      const { imei } = req.params;
      await requireModem(store, imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      if (!(await store.deleteSchedule(imei)))
        throw new ModemfleetError('unknown_schedule', `modem ${imei} has no rotation schedule of its own`);
      return reply.code(204).send();
    },
  );

  app.get(
    '/api/modems/:imei/transitions',
    {
      schema: {
        params: imeiParams,
        querystring: {
          type: 'object',
          properties: {
            before: { type: 'integer', minimum: 1, maximum: MAX_INT },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
          },
          additionalProperties: false,
        },
      },
    },
    async (
      req: FastifyRequest<{ Params: { imei: string }; Querystring: { before?: number; limit?: number } }>,
    ) => {
      await requireModem(store, req.params.imei);
      return store.transitions(req.params.imei, {
        ...(req.query.before !== undefined ? { before: req.query.before } : {}),
        ...(req.query.limit !== undefined ? { limit: req.query.limit } : {}),
      });
    },
  );

  app.get(
    '/api/modems/:imei/health',
    {
      schema: {
        params: imeiParams,
        querystring: {
          type: 'object',
          properties: {
            since: { type: 'string', format: 'date-time' },
            limit: { type: 'integer', minimum: 1, maximum: 5000 },
          },
          additionalProperties: false,
        },
      },
    },
    async (
      req: FastifyRequest<{ Params: { imei: string }; Querystring: { since?: string; limit?: number } }>,
    ) => {
      await requireModem(store, req.params.imei);
      return store.health(req.params.imei, {
        ...(req.query.since !== undefined ? { since: new Date(req.query.since) } : {}),
        ...(req.query.limit !== undefined ? { limit: req.query.limit } : {}),
      });
    },
  );

  // the public addresses seen through the modem's port, with its private address then: newest first
  app.get(
    '/api/modems/:imei/addresses',
    {
      schema: {
        params: imeiParams,
        querystring: {
          type: 'object',
          properties: {
            before: { type: 'string', format: 'date-time' },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
          },
          additionalProperties: false,
        },
      },
    },
    async (
      req: FastifyRequest<{ Params: { imei: string }; Querystring: { before?: string; limit?: number } }>,
    ) => {
      await requireModem(store, req.params.imei);
      return store.addresses(req.params.imei, {
        ...(req.query.before !== undefined ? { before: new Date(req.query.before) } : {}),
        ...(req.query.limit !== undefined ? { limit: req.query.limit } : {}),
      });
    },
  );

  // what rotations really give: rotations, distinct public addresses and /24s, reuse rate (24 h, 7 d)
  app.get(
    '/api/modems/:imei/addresses/stats',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest) => {
      await requireModem(store, req.params.imei);
      return store.addressStats(req.params.imei);
    },
  );
  app.get('/api/addresses/stats', async () => store.addressStats(null));

  // uptime from the journal: online over wanted (not disabled), 24 h, 7 d, 30 d (src/store/uptime.ts)
  app.get('/api/modems/:imei/uptime', { schema: { params: imeiParams } }, async (req: ImeiRequest) => {
    await requireModem(store, req.params.imei);
    return store.uptime(req.params.imei);
  });
  app.get('/api/uptime', async () => store.uptime(null));

  app.post(
    '/api/modems/:imei/commands',
    {
      schema: {
        params: imeiParams,
        body: {
          type: 'object',
          properties: { kind: { type: 'string', maxLength: 32 } },
          required: ['kind'],
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Body: { kind: string } }>, reply) => {
      const { imei } = req.params;
      const { kind } = req.body;
      if (!(COMMAND_KINDS as readonly string[]).includes(kind))
        throw new ModemfleetError(
          'invalid_command',
          `unknown command kind '${kind}'; expected one of ${COMMAND_KINDS.join(', ')}`,
        );
      await requireModem(store, imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      const id = await store.insertCommand(imei, kind, `api:${req.ip}`);
      return reply.code(202).send({ id, imei, kind, status: 'pending' });
    },
  );

  app.get(
    '/api/modems/:imei/commands',
    {
      schema: {
        params: imeiParams,
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 200 } },
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: { limit?: number } }>) => {
      await requireModem(store, req.params.imei);
      return store.recentCommands(req.params.imei, req.query.limit ?? 20);
    },
  );

  app.get(
    '/api/commands/:id',
    {
      schema: {
        params: {
          type: 'object',
          properties: { id: { type: 'integer', minimum: 1, maximum: MAX_INT } },
          required: ['id'],
        },
      },
    },
    async (req: FastifyRequest<{ Params: { id: number } }>) => {
      const command = await store.command(req.params.id);
      if (!command) throw new ModemfleetError('unknown_command', `no command with id ${req.params.id}`);
      return command;
    },
  );

  app.get(
    '/api/alerts',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: {
            open: { type: 'boolean' },
            imei: { type: 'string', pattern: '^[0-9]{15}$' },
            before: { type: 'integer', minimum: 1, maximum: MAX_INT },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
          },
          additionalProperties: false,
        },
      },
    },
    async (
      req: FastifyRequest<{
        Querystring: { open?: boolean; imei?: string; before?: number; limit?: number };
      }>,
    ) => {
      const q = req.query;
      return store.alerts({
        open: q.open ?? true,
        ...(q.imei !== undefined ? { imei: q.imei } : {}),
        ...(q.before !== undefined ? { before: q.before } : {}),
        ...(q.limit !== undefined ? { limit: q.limit } : {}),
      });
    },
  );

  // rotation links: created and revoked with the token, used without it
  app.post(
    '/api/modems/:imei/rotation-link',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      const secret = await store.createRotationLink(req.params.imei, `api:${req.ip}`);
      const path = `/rotate/${secret}`;
      // req.host passed the Host allowlist
      return reply.code(201).send({
        imei: req.params.imei,
        path,
        url: `${req.protocol}://${req.host}${path}`,
        methods: ['POST', 'GET'],
        warning: ROTATION_LINK_WARNING,
      });
    },
  );

  app.delete(
    '/api/modems/:imei/rotation-link',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      await requireModem(store, req.params.imei);
      if (!(await store.revokeRotationLink(req.params.imei)))
        throw new ModemfleetError('unknown_link', `modem ${req.params.imei} has no active rotation link`);
      return reply.code(204).send();
    },
  );

  // a rotation link: POST (scripts) or GET (a browser); the modem's pending rotate is shared
  app.route({
    method: ['POST', 'GET'],
    url: '/rotate/:secret',
    schema: {
      params: {
        type: 'object',
        properties: { secret: { type: 'string', maxLength: 128 } },
        required: ['secret'],
      },
      querystring: {
        type: 'object',
        properties: { wait: { type: 'integer', minimum: 0, maximum: 600 } },
        additionalProperties: false,
      },
    },
    handler: async (
      req: FastifyRequest<{ Params: { secret: string }; Querystring: { wait?: number } }>,
      reply,
    ) => {
      // before any query: a link used in a loop costs no database work past its budget
      if (rateLimited(deps.linkLimiter, linkKey(req.params.secret), reply, 'requests of this rotation link'))
        return reply;
      const imei = await store.resolveRotationLink(req.params.secret);
      if (!imei) throw new ModemfleetError('unknown_link', 'this rotation link is unknown or revoked');
      const id = await store.insertCommand(imei, 'rotate', 'rotation-link');
      const waitMs = Math.min(req.query.wait ?? 0, deps.rotateWaitMaxSeconds) * 1000;
      if (waitMs === 0) return reply.code(202).send({ id, imei, status: 'pending' });
      // the answer is silent while it waits: this connection's idle timeout covers the wait
      req.raw.socket.setTimeout(waitMs + deps.idleTimeoutMs);
      const deadline = Date.now() + waitMs;
      for (;;) {
        const command = await store.command(id);
        if (command && (command.status === 'done' || command.status === 'failed'))
          return reply.code(200).send({ id, imei, status: command.status, result: command.result });
        if (Date.now() >= deadline || req.raw.destroyed)
          return reply.code(202).send({ id, imei, status: command?.status ?? 'pending' });
        await sleep(200);
      }
    },
  });
}
