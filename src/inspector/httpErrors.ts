import type { FastifyError, FastifyReply } from 'fastify';
import type { Logger } from '../log.js';
import { isRetryable } from '../store/pgErrors.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { ACCESS_API_STATUS } from './accessApi.js';
import { ALERTS_API_STATUS } from './alertsApi.js';
import { TRAFFIC_API_STATUS } from './trafficApi.js';

/** How errors become HTTP answers: a stable code and a clear message, never a stack. */
export const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  unknown_modem: 404,
  unknown_command: 404,
  unknown_link: 404,
  unknown_schedule: 404,
  invalid_schedule: 400,
  invalid_imei: 400,
  invalid_command: 400,
  invalid_request: 400,
  rate_limited: 429,
  queue_full: 429,
  forbidden: 403,
  no_credentials: 409,
  // the modem's host is marked dead: the command would wait for it (src/store/liveness.ts)
  host_unavailable: 409,
  ...ALERTS_API_STATUS,
  ...TRAFFIC_API_STATUS,
  ...ACCESS_API_STATUS,
};

/** 421 for a Host that does not name this inspector (DNS rebinding): what to configure instead. */
export const hostRefusal = (host: string | undefined) => ({
  error: 'host_not_allowed',
  message: `Host '${(host ?? '').slice(0, 100)}' is not served here; use a loopback or listen address, or add the name to "allowedHosts" in the config`,
});

/** An error as `{ error, message }`: a 4xx, 503 while the database is away, else 500 (logged). */
export function replyError(
  err: FastifyError,
  reply: FastifyReply,
  options: { bodyBytes: number; log: Logger; url: string },
): void {
  const { url } = options;
  if (err instanceof ModemfleetError) {
    const code = STATUS_BY_CODE[err.code] ?? 400;
    void reply.code(code).send({ error: err.code, message: err.message });
    return;
  }
  if (err.validation) {
    void reply.code(400).send({ error: 'invalid_request', message: err.message });
    return;
  }
  const status = err.statusCode ?? 500;
  if (status === 413) {
    void reply.code(413).send({
      error: 'body_too_large',
      message: `request bodies are limited to ${options.bodyBytes} bytes`,
    });
    return;
  }
  if (status === 415) {
    void reply
      .code(415)
      .send({ error: 'unsupported_media_type', message: 'send JSON (Content-Type: application/json)' });
    return;
  }
  if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
    void reply.code(400).send({ error: 'invalid_json', message: err.message });
    return;
  }
  if (status >= 400 && status < 500) {
    void reply.code(status).send({ error: 'bad_request', message: err.message });
    return;
  }
  if (isRetryable(err)) {
    void reply
      .code(503)
      .header('retry-after', '5')
      .send({ error: 'database_unavailable', message: 'the database is unreachable; retry shortly' });
    return;
  }
  options.log.error({ err: coerceError(err), url: url.split('?')[0] }, 'request failed');
  void reply.code(500).send({ error: 'internal', message: 'internal error (logged)' });
}
