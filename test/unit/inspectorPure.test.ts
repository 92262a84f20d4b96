import { fc, test as prop } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { parseListen } from '../../src/config.js';
import { Registry } from 'prom-client';
import { commandLatencyHistogram } from '../../src/fleet/commandProcessor.js';
import { PER_MODEM_GAUGES, perModemLines, perModemMetricsText } from '../../src/inspector/farmMetrics.js';
import { single, sourcedCounter, sourcedGauge, type Sample } from '../../src/inspector/metrics.js';
import { messageOf, messagesOf, parseClientMessage } from '../../src/inspector/protocol.js';
import { RateLimiter } from '../../src/inspector/rateLimit.js';
import { bearerToken, tokenMatches } from '../../src/inspector/token.js';
import { CHANNELS, type Channel } from '../../src/store/types.js';

describe('Prometheus metrics (prom-client, read at scrape time)', () => {
  it("the per-modem gauges' own text is what prom-client prints for the same modems", async () => {
    const rows = [
      {
        imei: '353000000000001',
        host: 'h01',
        state: 'online',
        rssi: -71,
        rsrp: -98.5,
        sinr: 12,
        stale: false,
      },
      {
        imei: '353000000000002',
        host: 'a"b\\c\nd',
        state: 'online',
        rssi: null,
        rsrp: null,
        sinr: null,
        stale: true,
      },
      {
        imei: '353000000000003',
        host: null,
        state: 'error',
        rssi: -113,
        rsrp: -140,
        sinr: -20,
        stale: false,
      },
    ];
    const register = new Registry();
    for (const g of PER_MODEM_GAUGES)
      sourcedGauge(register, {
        name: g.name,
        help: g.help,
        labelNames: ['imei', 'host'],
        read: () =>
          rows.flatMap((m) => {
            const value = g.value(m);
            return value === null ? [] : [{ labels: { imei: m.imei, host: m.host ?? '' }, value }];
          }),
      });
    const expected = await register.metrics();
    expect(`${perModemMetricsText(rows.map(perModemLines))}\n`).toBe(expected);
    expect(expected).toContain('host="a\\"b\\\\c\\nd"');
    // the modems not read: every family, no series
    const empty = new Registry();
    for (const g of PER_MODEM_GAUGES)
      sourcedGauge(empty, { name: g.name, help: g.help, labelNames: ['imei', 'host'], read: () => [] });
    expect(`${perModemMetricsText(undefined)}\n`).toBe(await empty.metrics());
  });

  it('renders what each scrape reads: escaped labels, samples gone when not read again, no stand-in 0', async () => {
    const register = new Registry();
    let modems: Sample[] = [{ labels: { host: 'a"b\\c', state: 'online' }, value: 3 }];
    let up: number | null = 1;
    let sent = 5;
    sourcedGauge(register, { name: 'm_up', help: 'line\nbreak', read: () => single(up) });
    sourcedGauge(register, {
      name: 'm_modems',
      help: 'by state',
      labelNames: ['host', 'state'],
      read: () => Promise.resolve(modems),
    });
    sourcedCounter(register, { name: 'm_sent_total', help: 'sent', read: () => single(sent) });
    expect(await register.metrics()).toBe(
      [
        '# HELP m_up line\\nbreak',
        '# TYPE m_up gauge',
        'm_up 1',
        '',
        '# HELP m_modems by state',
        '# TYPE m_modems gauge',
        'm_modems{host="a\\"b\\\\c",state="online"} 3',
        '',
        '# HELP m_sent_total sent',
        '# TYPE m_sent_total counter',
        'm_sent_total 5',
        '',
      ].join('\n'),
    );
    // the next scrape: another state, the value unknown, the counter's owner counted on
    modems = [{ labels: { host: 'h', state: 'error' }, value: 1 }];
    up = null;
    sent = 7;
    const text = await register.metrics();
    expect(text).not.toMatch(/^m_up /m);
    expect(text).not.toContain('state="online"');
    expect(text).toMatch(/^m_modems\{host="h",state="error"\} 1$/m);
    expect(text).toMatch(/^m_sent_total 7$/m);
  });

  it('keeps each registry to itself (several inspectors in one process)', async () => {
    const a = new Registry();
    const b = new Registry();
    sourcedGauge(a, { name: 'm_same', help: 'same name', read: () => single(1) });
    sourcedGauge(b, { name: 'm_same', help: 'same name', read: () => single(2) });
    expect(await a.metrics()).toMatch(/^m_same 1$/m);
    expect(await b.metrics()).toMatch(/^m_same 2$/m);
    expect(() => sourcedGauge(a, { name: 'm_same', help: 'again', read: () => [] })).toThrow(/already/);
    expect(() => sourcedGauge(a, { name: 'bad name', help: 'x', read: () => [] })).toThrow();
  });

  it('the command latency histogram: cumulative buckets, +Inf, sum and count', async () => {
    const register = new Registry();
    const h = commandLatencyHistogram();
    register.registerMetric(h);
    for (const s of [0.03, 0.5, 3, 1000]) h.observe(s);
    const text = await register.metrics();
    expect(text).toMatch(/^# TYPE modemfleet_command_duration_seconds histogram$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_bucket\{le="0.05"\} 1$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_bucket\{le="0.5"\} 2$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_bucket\{le="5"\} 3$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_bucket\{le="300"\} 3$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_bucket\{le="\+Inf"\} 4$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_sum 1003.53$/m);
    expect(text).toMatch(/^modemfleet_command_duration_seconds_count 4$/m);
    // in no registry but the one it was put in
    expect(await new Registry().metrics()).not.toContain('modemfleet_command_duration_seconds');
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
