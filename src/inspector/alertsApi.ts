import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DEFAULT_WEBHOOK_POLICY } from '../alerts/webhookDispatcher.js';
import { sendDelivery, type SendLimits } from '../alerts/webhookSender.js';
import { parseWebhook } from '../alerts/webhookSpec.js';
import type { Store } from '../store/store.js';
import { ModemfleetError } from '../util/errors.js';

/** Push alerts over HTTP: webhooks, acknowledging alerts, silencing modems. */
export interface AlertsApiDeps {
  store: Store;
  /** A test delivery's request limits (default: the policy's). */
  send?: SendLimits;
}

/** How this file's error codes become HTTP statuses (merged into the inspector's table). */
export const ALERTS_API_STATUS: Readonly<Record<string, number>> = {
  invalid_webhook: 400,
  invalid_silence: 400,
  unknown_webhook: 404,
  unknown_alert: 404,
  unknown_silence: 404,
  webhook_exists: 409,
  config_webhook: 409,
};

const MAX_INT = 2 ** 53 - 1;
const idParams = {
  type: 'object',
  properties: { id: { type: 'integer', minimum: 1, maximum: MAX_INT } },
  required: ['id'],
} as const;
const imeiParams = {
  type: 'object',
  properties: { imei: { type: 'string', pattern: '^[0-9]{15}$' } },
  required: ['imei'],
} as const;

type IdRequest = FastifyRequest<{ Params: { id: number } }>;
type ImeiRequest = FastifyRequest<{ Params: { imei: string } }>;

async function requireWebhook(store: Store, id: number) {
  const [webhook] = await store.webhooks(id);
  if (!webhook) throw new ModemfleetError('unknown_webhook', `no webhook with id ${id}`);
  return webhook;
}

export function registerAlertsApi(app: FastifyInstance, deps: AlertsApiDeps): void {
  const { store } = deps;
  const send = deps.send ?? DEFAULT_WEBHOOK_POLICY;

  app.get('/api/webhooks', async () => store.webhooks());

  // the secret is answered once, here; never again
  app.post(
    '/api/webhooks',
    { schema: { body: { type: 'object', maxProperties: 8 } } },
    async (req: FastifyRequest<{ Body: unknown }>, reply) => {
      const problems: string[] = [];
      const spec = parseWebhook(req.body, '', problems);
      if (!spec) throw new ModemfleetError('invalid_webhook', problems.join('; '));
      const webhook = await store.createWebhook(spec, `api:${req.ip}`);
      return reply.code(201).send({ ...webhook, secret: spec.secret });
    },
  );

  app.get('/api/webhooks/:id', { schema: { params: idParams } }, async (req: IdRequest) =>
    requireWebhook(store, req.params.id),
  );

  app.get(
    '/api/webhooks/:id/deliveries',
    {
      schema: {
        params: idParams,
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 500 } },
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { id: number }; Querystring: { limit?: number } }>) => {
      await requireWebhook(store, req.params.id);
      return store.deliveries(req.params.id, req.query.limit ?? 50);
    },
  );

  app.delete('/api/webhooks/:id', { schema: { params: idParams } }, async (req: IdRequest, reply) => {
    await store.deleteWebhook(req.params.id);
    return reply.code(204).send();
  });

  // one attempt now, recorded as a `test` delivery; the answer says how it went
  app.post('/api/webhooks/:id/test', { schema: { params: idParams } }, async (req: IdRequest) => {
    const job = await store.insertTestDelivery(req.params.id);
    const result = await sendDelivery(job, send);
    await store.finishDelivery(job.id, { ...result, retryInMs: null });
    return { deliveryId: job.id, delivered: result.ok, status: result.status, error: result.error };
  });

  app.post('/api/alerts/:id/ack', { schema: { params: idParams } }, async (req: IdRequest) =>
    store.ackAlert(req.params.id, `api:${req.ip}`),
  );

  app.get('/api/silences', async () => store.silences());

  app.post(
    '/api/modems/:imei/silence',
    {
      schema: {
        params: imeiParams,
        body: {
          type: 'object',
          properties: { until: { type: 'string', format: 'date-time', maxLength: 64 } },
          required: ['until'],
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Body: { until: string } }>) =>
      store.setSilence(req.params.imei, new Date(req.body.until), `api:${req.ip}`),
  );

  app.delete(
    '/api/modems/:imei/silence',
    { schema: { params: imeiParams } },
    async (req: ImeiRequest, reply) => {
      if (!(await store.clearSilence(req.params.imei)))
        throw new ModemfleetError('unknown_silence', `modem ${req.params.imei} is not silenced`);
      return reply.code(204).send();
    },
  );
}
