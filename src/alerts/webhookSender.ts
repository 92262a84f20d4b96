import { coerceError } from '../util/errors.js';
import type { DeliveryJob } from '../store/deliveries.js';
import { SIGNATURE_HEADER, renderBody, signature } from './webhookSpec.js';

export interface SendLimits {
  /** The whole request, connect to last byte read. */
  timeoutMs: number;
  /** At most this much of the answer is read (for the error message); the rest is dropped. */
  responseBytes: number;
}

export interface SendResult {
  ok: boolean;
  /** The HTTP status, null when there was no answer. */
  status: number | null;
  error: string | null;
}

/** At most `max` bytes of a response body, as text; the rest is cancelled. */
async function readBounded(res: Response, max: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, max).toString('utf8');
}

function failure(err: unknown, timeoutMs: number): string {
  const e = coerceError(err);
  if (e.name === 'TimeoutError' || e.name === 'AbortError')
    return `timeout: no answer within ${timeoutMs} ms`;
  const cause = e.cause as { code?: string; message?: string } | undefined;
  return cause?.code ? `${cause.code}: ${cause.message ?? e.message}` : e.message;
}

/**
 * One attempt: POST the rendered body, signed with the webhook's secret
 * (`X-Modemfleet-Signature: sha256=<hex>`). 2xx is delivered. Redirects are never followed (a
 * receiver that moved is an error to fix in its URL, not a hop to another host); the answer is read
 * up to `responseBytes` and the request given up after `timeoutMs`.
 */
export async function sendDelivery(job: DeliveryJob, limits: SendLimits): Promise<SendResult> {
  const body = renderBody(job.format, job.chatId, job.event, new Date());
  try {
    const res = await fetch(job.url, {
      method: 'POST',
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(limits.timeoutMs),
      headers: {
        'content-type': 'application/json',
        'user-agent': 'modemfleet-webhook',
        [SIGNATURE_HEADER]: signature(job.secret, body),
        'x-modemfleet-event': job.event.event,
        'x-modemfleet-delivery': String(job.id),
      },
    });
    const text = (await readBounded(res, limits.responseBytes)).replace(/\s+/g, ' ').trim();
    if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status, error: null };
    if (res.status >= 300 && res.status < 400)
      return { ok: false, status: res.status, error: `redirect not followed (HTTP ${res.status})` };
    return {
      ok: false,
      status: res.status,
      error: `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`,
    };
  } catch (err) {
    return { ok: false, status: null, error: failure(err, limits.timeoutMs).slice(0, 300) };
  }
}
