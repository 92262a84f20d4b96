import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_WEBHOOK_POLICY, retryIn } from '../../src/alerts/webhookDispatcher.js';
import {
  alertText,
  parseWebhook,
  redactUrl,
  renderBody,
  signature,
  type AlertEvent,
} from '../../src/alerts/webhookSpec.js';
import { parseSilenceArgs } from '../../src/cli/silence.js';
import { loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/util/errors.js';

const parse = (input: unknown, prefix = '') => {
  const problems: string[] = [];
  const spec = parseWebhook(input, prefix, problems, () => 'generated-secret-0123456789');
  return { spec, problems };
};

const event: AlertEvent = {
  event: 'raised',
  deliveryId: 7,
  webhook: 'ops',
  alert: {
    id: 42,
    kind: 'egress_mismatch',
    severity: 'critical',
    message: 'port 31001 egresses from 198.51.100.9',
    imei: '356000000000001',
    host: 'farm-1',
    detail: {},
    raisedAt: '2026-11-30T10:00:00.000Z',
    resolvedAt: null,
  },
};

describe('webhook definitions', () => {
  it('takes a JSON webhook with a filter; generates a secret when none is given', () => {
    const { spec, problems } = parse({
      name: 'ops',
      url: 'https://hooks.example.net/modemfleet',
      filter: { severities: ['critical'], kinds: ['egress_mismatch'], resolved: true },
    });
    expect(problems).toEqual([]);
    expect(spec).toEqual({
      name: 'ops',
      url: 'https://hooks.example.net/modemfleet',
      secret: 'generated-secret-0123456789',
      format: 'json',
      chatId: null,
      kinds: ['egress_mismatch'],
      severities: ['critical'],
      resolved: true,
    });
  });

  it('builds the Telegram URL from a bot token, and hides the token when shown', () => {
    const { spec } = parse({
      name: 'tg',
      format: 'telegram',
      botToken: '123456:ABCdefGHIjklMNOpqrSTUvwx',
      chatId: '-1001234',
    });
    expect(spec?.url).toBe('https://api.telegram.org/bot123456:ABCdefGHIjklMNOpqrSTUvwx/sendMessage');
    expect(redactUrl(spec?.url ?? '')).toBe('https://api.telegram.org/bot***/sendMessage');
  });

  it('names every problem with its path', () => {
    expect(
      parse(
        {
          name: 'bad name',
          url: 'ftp://x.example/',
          secret: 'short',
          format: 'telegram',
          colour: 'red',
          filter: { severities: ['loud'], kinds: [], extra: 1 },
        },
        'webhooks[0]',
      ).problems,
    ).toEqual([
      'webhooks[0].colour: unknown setting',
      'webhooks[0].name: letters, digits, dots, dashes and underscores, 1-64',
      'webhooks[0].url: must be an http(s) URL',
      'webhooks[0].secret: 16-256 characters',
      'webhooks[0].chatId: format "telegram" needs the chat id (digits, or @channel)',
      'webhooks[0].filter.extra: unknown setting',
      'webhooks[0].filter.kinds: 1-64 alert kinds (e.g. "egress_mismatch")',
      'webhooks[0].filter.severities: some of info, warning, critical',
    ]);
    expect(parse({ name: 'a', url: 'http://u:p@h.example/' }).problems).toEqual([
      'url: must not carry a user or password (use the secret)',
    ]);
    expect(parse('nope').problems).toEqual(['webhook: must be an object']);
  });
});

describe('webhook bodies', () => {
  it('signs the exact bytes sent with HMAC-SHA256', () => {
    const body = renderBody('json', null, event, new Date('2026-11-30T10:00:01Z'));
    expect(JSON.parse(body)).toEqual({ ...event, sentAt: '2026-11-30T10:00:01.000Z' });
    const hex = createHmac('sha256', 'the-secret').update(body).digest('hex');
    expect(signature('the-secret', body)).toBe(`sha256=${hex}`);
    expect(signature('another-secret', body)).not.toBe(`sha256=${hex}`);
  });

  it('renders Telegram and chat templates from the alert', () => {
    const text =
      '[CRITICAL] egress_mismatch (modem 356000000000001, host farm-1): port 31001 egresses from 198.51.100.9';
    expect(alertText(event)).toBe(text);
    expect(JSON.parse(renderBody('telegram', '-1001234', event, new Date()))).toEqual({
      chat_id: '-1001234',
      text,
      disable_web_page_preview: true,
    });
    expect(JSON.parse(renderBody('chat', null, { ...event, event: 'resolved' }, new Date()))).toEqual({
      text: text.replace('[CRITICAL]', '[RESOLVED]'),
    });
  });

  it('backs off with a cap and gives up after the last attempt', () => {
    const p = { ...DEFAULT_WEBHOOK_POLICY, retryBaseMs: 1_000, retryCapMs: 8_000, maxAttempts: 6 };
    expect([1, 2, 3, 4, 5, 6].map((n) => retryIn(p, n))).toEqual([1_000, 2_000, 4_000, 8_000, 8_000, null]);
  });
});

describe('config webhooks and the silence command', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mf-webhooks-'));
  const load = (webhooks: unknown) => {
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ webhooks }));
    return loadConfig({ env: {}, file });
  };
  const problems = (webhooks: unknown): readonly string[] => {
    try {
      load(webhooks);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    throw new Error('expected a ConfigError');
  };

  it('reads webhooks from the config file, reporting path: message', () => {
    const c = load([
      { name: 'ops', url: 'https://h.example/x', secret: 'a-secret-of-16-chars' },
      { name: 'chat', format: 'chat', url: 'https://mm.example/hooks/abc' },
    ]);
    expect(c.webhooks?.map((w) => [w.name, w.format])).toEqual([
      ['ops', 'json'],
      ['chat', 'chat'],
    ]);
    expect(loadConfig({ env: {} }).webhooks).toBeUndefined();
    expect(load([]).webhooks).toEqual([]);
    expect(
      problems([
        { name: 'ops', url: 'https://h.example/x' },
        { name: 'c', format: 'chat', url: 'https://h.example/y' },
        { name: 'c', format: 'chat', url: 'https://h.example/z' },
        { name: 'd', url: 'mailto:x' },
      ]),
    ).toEqual([
      'webhooks[0].secret: required for format "json" (the receiver checks the signature with it)',
      "webhooks[2].name: 'c' is used twice",
      'webhooks[3].url: must be an http(s) URL',
    ]);
    expect(problems({})).toEqual(['webhooks: must be an array of at most 32 webhooks']);
  });

  it('parses --until as a duration or an ISO time, and --off', () => {
    const now = Date.parse('2026-11-30T10:00:00Z');
    const imei = '356000000000001';
    expect(parseSilenceArgs([imei], { until: '2h' }, now).until?.toISOString()).toBe(
      '2026-11-30T12:00:00.000Z',
    );
    expect(parseSilenceArgs([imei], { until: '2026-12-01T06:00Z' }, now).until?.toISOString()).toBe(
      '2026-12-01T06:00:00.000Z',
    );
    expect(parseSilenceArgs([imei], { off: true }, now)).toEqual({ imei, until: null });
    expect(() => parseSilenceArgs([imei], { until: 'tomorrow' }, now)).toThrow(/--until must be a duration/);
    expect(() => parseSilenceArgs([imei], {}, now)).toThrow(/--until or --off/);
    expect(() => parseSilenceArgs([imei], { off: true, until: '1h' }, now)).toThrow(/not both/);
    expect(() => parseSilenceArgs(['123'], { until: '1h' }, now)).toThrow(/imei must be 15 digits/);
  });
});
