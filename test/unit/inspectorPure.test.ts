import { fc, test as prop } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { parseListen } from '../../src/config.js';
import { histogramSamples, renderMetrics } from '../../src/inspector/metrics.js';
import { messageOf, messagesOf, parseClientMessage } from '../../src/inspector/protocol.js';
import { RateLimiter } from '../../src/inspector/rateLimit.js';
import { bearerToken, tokenMatches } from '../../src/inspector/token.js';
import { CHANNELS, type Channel } from '../../src/store/types.js';
import { Histogram } from '../../src/util/histogram.js';

describe('Prometheus rendering', () => {
  it('renders families with escaped labels and histogram buckets', () => {
    const h = new Histogram([0.1, 1]);
    h.observe(0.05);
    h.observe(0.5);
    h.observe(3);
    const text = renderMetrics([
      { name: 'm_up', help: 'line\nbreak', type: 'gauge', samples: [{ value: 1 }] },
      {
        name: 'm_modems',
        help: 'by state',
        type: 'gauge',
        samples: [{ labels: { host: 'a"b\\c', state: 'online' }, value: 3 }],
      },
      { name: 'm_latency_seconds', help: 'latency', type: 'histogram', samples: histogramSamples(h) },
    ]);
    expect(text).toBe(
      [
        '# HELP m_up line\\nbreak',
        '# TYPE m_up gauge',
        'm_up 1',
        '# HELP m_modems by state',
        '# TYPE m_modems gauge',
        'm_modems{host="a\\"b\\\\c",state="online"} 3',
        '# HELP m_latency_seconds latency',
        '# TYPE m_latency_seconds histogram',
        'm_latency_seconds_bucket{le="0.1"} 1',
        'm_latency_seconds_bucket{le="1"} 2',
        'm_latency_seconds_bucket{le="+Inf"} 3',
        'm_latency_seconds_sum 3.55',
        'm_latency_seconds_count 3',
        '',
      ].join('\n'),
    );
  });

  it('refuses invalid names', () => {
    expect(() => renderMetrics([{ name: 'bad name', help: '', type: 'gauge', samples: [] }])).toThrow();
  });
});

describe('rate limiter', () => {
  it('allows a burst, then one per interval, per key', () => {
    let now = 0;
    const limiter = new RateLimiter({ burst: 2, refillMs: 1000 }, () => now);
    expect([limiter.take('a'), limiter.take('a'), limiter.take('a')]).toEqual([0, 0, 1000]);
    expect(limiter.take('b')).toBe(0);
    now = 500;
    expect(limiter.take('a')).toBe(500);
    now = 1000;
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBeGreaterThan(0);
  });

  it('keeps at most maxKeys buckets', () => {
    const limiter = new RateLimiter({ burst: 1, refillMs: 1000, maxKeys: 10 }, () => 0);
    for (let i = 0; i < 100; i++) limiter.take(`k${i}`);
    expect(limiter.size).toBe(10);
  });
});

describe('tokens', () => {
  it('reads bearer headers and compares in constant time', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer   abc  ')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken(['Bearer a'])).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
    expect(tokenMatches('secret-1', 'secret-1')).toBe(true);
    expect(tokenMatches('secret-1', 'secret-12')).toBe(false);
    expect(tokenMatches(undefined, 'secret')).toBe(false);
  });
});

describe('WebSocket protocol', () => {
  it('accepts resync and ping, refuses anything else with a reason', () => {
    expect(parseClientMessage('{"type":"resync"}')).toEqual({ type: 'resync' });
    expect(parseClientMessage('{"type":"ping","x":1}')).toEqual({ type: 'ping' });
    expect(parseClientMessage('nope')).toHaveProperty('problem');
    expect(parseClientMessage('[1]')).toHaveProperty('problem');
    expect(parseClientMessage('{"type":"drop tables"}')).toHaveProperty('problem');
  });

  it('forwards notifications of the triggers, drops any other shape', () => {
    const t = {
      imei: '359000000000017',
      seq: 3,
      from: 'online.serving',
      to: 'online.polling',
      event: 'after.poll',
      at: '2026-01-01T00:00:00Z',
      host: 'a',
    };
    // a journal batch: one message per transition, in order; any bad element drops the notification
    const batch = (...transitions: unknown[]): ReturnType<typeof messagesOf> =>
      messagesOf({ channel: 'modem_status_change', payload: { transitions } });
    const t4 = { ...t, seq: 4, from: 'online.polling', to: 'online.serving' };
    expect(batch(t, t4)).toEqual([
      { type: 'transition', ...t },
      { type: 'transition', ...t4 },
    ]);
    expect(batch({ ...t, seq: -1 })).toBeNull();
    expect(batch(t, { ...t, imei: '1; drop' })).toBeNull();
    expect(batch({ ...t, to: 'x'.repeat(500) }, t4)).toBeNull();
    expect(batch()).toBeNull();
    expect(batch(...Array.from({ length: 501 }, () => t))).toBeNull();
    expect(messagesOf({ channel: 'modem_status_change', payload: t })).toBeNull(); // one row: the old shape
    expect(messagesOf({ channel: 'modem_config_change', payload: { imei: t.imei } })).toEqual([]);
    expect(
      messageOf({
        channel: 'modem_commands',
        payload: { id: 1, imei: t.imei, kind: 'rotate', status: 'done' },
      }),
    ).toEqual({
      type: 'command',
      id: 1,
      imei: t.imei,
      kind: 'rotate',
      status: 'done',
    });
  });

  prop.prop([
    fc.constantFrom<Channel>(...CHANNELS),
    fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 })),
  ])('never throws on any payload', (channel, payload) => {
    const m = messageOf({ channel, payload });
    if (m !== null) expect(typeof m.type).toBe('string');
    for (const x of messagesOf({ channel, payload }) ?? []) expect(typeof x.type).toBe('string');
    const list = messagesOf({ channel: 'modem_status_change', payload: { transitions: [payload] } });
    if (list !== null) expect(list.map((x) => x.type)).toEqual(['transition']);
  });
});

describe('listen addresses', () => {
  it('parses HOST:PORT, [IPv6]:PORT and off; reports the rest', () => {
    const problems: string[] = [];
    expect(parseListen('127.0.0.1:8080', 'http', problems)).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseListen('[::1]:0', 'http', problems)).toEqual({ host: '::1', port: 0 });
    expect(parseListen('farm.local:9000', 'http', problems)).toEqual({ host: 'farm.local', port: 9000 });
    expect(parseListen('off', 'http', problems)).toBeNull();
    expect(problems).toEqual([]);
    expect(parseListen('8080', 'http', problems)).toBeUndefined();
    expect(parseListen('a:99999', 'http', problems)).toBeUndefined();
    expect(parseListen('a b:1', 'http', problems)).toBeUndefined();
    expect(problems).toHaveLength(3);
  });
});
