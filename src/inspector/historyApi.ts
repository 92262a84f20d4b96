import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HISTORY_MAX_HOURS, historyWindow } from '../store/downsample.js';
import type { Store } from '../store/store.js';
import { ModemfleetError } from '../util/errors.js';

/**
 * `GET /api/modems/:imei/history?hours=24`: a modem's signal and states over the last hours, a
 * bounded number of points for the page's charts (src/store/downsample.ts). A reseller token sees
 * only its modems' (the `/api/modems/:imei` rule of authorize.ts).
 */
export function registerHistoryApi(app: FastifyInstance, deps: { store: Store }): void {
  const { store } = deps;
  app.get(
    '/api/modems/:imei/history',
    {
      schema: {
        params: {
          type: 'object',
          properties: { imei: { type: 'string', pattern: '^[0-9]{15}$' } },
          required: ['imei'],
        },
        querystring: {
          type: 'object',
          properties: { hours: { type: 'integer', minimum: 1, maximum: HISTORY_MAX_HOURS, default: 24 } },
          additionalProperties: false,
        },
      },
    },
    async (req: FastifyRequest<{ Params: { imei: string }; Querystring: { hours: number } }>) => {
      const { imei } = req.params;
      const { hours } = req.query;
      // 404 for an unknown modem, not an empty history
      const [modem] = await store.modems({ imei });
      if (!modem) throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
      const history = await store.modemHistory(imei, historyWindow(hours, new Date()));
      return { imei, hours, ...history };
    },
  );
}
