import type { FastifyInstance, FastifyRequest } from 'fastify';
import { quotaView } from '../store/quotas.js';
import { TRAFFIC_STEPS, type TrafficStep } from '../store/traffic.js';
import { ModemfleetError } from '../util/errors.js';
import { rateLimited, type ApiDeps } from './api.js';

/** How this file's error codes become HTTP statuses (merged into the inspector's table). */
export const TRAFFIC_API_STATUS: Readonly<Record<string, number>> = {
  invalid_quota: 400,
  invalid_expiry: 400,
  invalid_traffic_query: 400,
  no_quota: 404,
  no_expiry: 404,
};

const imeiParams = {
  type: 'object',
  properties: { imei: { type: 'string', pattern: '^[0-9]{15}$' } },
  required: ['imei'],
} as const;

type ImeiRequest = FastifyRequest<{ Params: { imei: string } }>;

const ISO = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/;

/** An ISO 8601 date (UTC midnight) or date-time with a zone (`Z` or an offset); `what` names it. */
export function parseIsoTime(text: unknown, what: string, code: string): Date {
  const at = typeof text === 'string' && ISO.test(text) ? new Date(text) : null;
  if (!at || Number.isNaN(at.getTime()))
    throw new ModemfleetError(
      code,
      `${what}: must be an ISO 8601 time with a zone, e.g. 2030-01-31T00:00:00Z or 2030-01-31 (UTC), not ${JSON.stringify(String(text).slice(0, 40))}`,
    );
  return at;
}

/** The default range of a step when `from` is not given: an hour of minutes, a day of hours, a month of days. */
const DEFAULT_SPAN_MS: Record<TrafficStep, number> = {
  '1m': 3_600_000,
  '1h': 86_400_000,
  '1d': 31 * 86_400_000,
};

/** `?from&to&step` checked: `invalid_traffic_query` with what is wrong. */
export function parseTrafficQuery(
  query: Record<string, unknown>,
  now = new Date(),
): { from: Date; to: Date; step: TrafficStep } {
  const step = query['step'] ?? '1h';
  if (!(TRAFFIC_STEPS as readonly unknown[]).includes(step))
    throw new ModemfleetError(
      'invalid_traffic_query',
      `step: must be one of ${TRAFFIC_STEPS.join(', ')}, not ${JSON.stringify(typeof step === 'string' ? step.slice(0, 20) : typeof step)}`,
    );
  const s = step as TrafficStep;
  const to = query['to'] === undefined ? now : parseIsoTime(query['to'], 'to', 'invalid_traffic_query');
  const from =
    query['from'] === undefined
      ? new Date(to.getTime() - DEFAULT_SPAN_MS[s])
      : parseIsoTime(query['from'], 'from', 'invalid_traffic_query');
  if (from.getTime() >= to.getTime())
    throw new ModemfleetError('invalid_traffic_query', 'from: must be before to');
  return { from, to, step: s };
}

/**
 * Traffic and quotas of one modem over HTTP. Under `/api/modems/:imei`, so the token scopes hold
 * (authorize.ts): a reseller sees and sets only its own modems', a read-only token only reads.
 * - `GET .../traffic?from&to&step`: `[{ at, download, upload }]`, bytes per step (`1m|1h|1d`),
 *   every step from `from` (floored) to `to` present;
 * - `GET|PUT|DELETE .../quota` (`{ bytes, period, monthStartDay? }`), `POST .../quota/reset`;
 * - `PUT|DELETE .../expiry` (`{ at }`).
 * Changes reach the owning host through `modem_config_change` at once.
 */
export function registerTrafficApi(app: FastifyInstance, deps: ApiDeps): void {
  const { store } = deps;

  const requireModem = async (imei: string): Promise<void> => {
    if (!(await store.modemRecord(imei)))
      throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
  };

  app.get(
    '/api/modems/:imei/traffic',
    {
      schema: {
        params: imeiParams,
        querystring: {
          type: 'object',
          properties: {
            from: { type: 'string', maxLength: 40 },
            to: { type: 'string', maxLength: 40 },
            step: { type: 'string', maxLength: 8 },
          },
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: Record<string, unknown> }>) => {
      const range = parseTrafficQuery(req.query);
      await requireModem(req.params.imei);
      return store.trafficSeries(req.params.imei, range);
    },
  );

  app.get('/api/modems/:imei/quota', { schema: { params: imeiParams } }, async (req: ImeiRequest) => {
    await requireModem(req.params.imei);
    const q = await store.quota(req.params.imei);
    return q ? quotaView(q) : null;
  });

  app.put(
    '/api/modems/:imei/quota',
    { schema: { params: imeiParams, body: { type: 'object', maxProperties: 8 } } },
    async (req: FastifyRequest<{ Params: { imei: string }; Body: unknown }>, reply) => {
      const { imei } = req.params;
      await requireModem(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      return quotaView(await store.setQuota(imei, req.body, `api:${req.ip}`));
    },
  );

  app.delete(
    '/api/modems/:imei/quota',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      const { imei } = req.params;
      await requireModem(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      if (!(await store.clearQuota(imei, `api:${req.ip}`)))
        throw new ModemfleetError('no_quota', `modem ${imei} has no byte quota`);
      return reply.code(204).send();
    },
  );

  app.post(
    '/api/modems/:imei/quota/reset',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      const { imei } = req.params;
      await requireModem(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      return quotaView(await store.resetQuota(imei, `api:${req.ip}`));
    },
  );

  app.put(
    '/api/modems/:imei/expiry',
    {
      schema: {
        params: imeiParams,
        body: {
          type: 'object',
          properties: { at: { type: 'string', maxLength: 40 } },
          required: ['at'],
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Body: { at: string } }>, reply) => {
      const { imei } = req.params;
      const at = parseIsoTime(req.body.at, 'at', 'invalid_expiry');
      await requireModem(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      return quotaView(await store.setExpiry(imei, at, `api:${req.ip}`));
    },
  );

  app.delete(
    '/api/modems/:imei/expiry',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      const { imei } = req.params;
      await requireModem(imei);
      if (rateLimited(deps.operatorLimiter, imei, reply)) return reply;
      if (!(await store.clearExpiry(imei, `api:${req.ip}`)))
        throw new ModemfleetError('no_expiry', `modem ${imei} has no expiry`);
      return reply.code(204).send();
    },
  );
}
