import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { proxyMachine, type ProxyConfig } from '../../machines/proxyMachine.js';
import { settle, stateString } from '../helpers/fakeModem.js';

function run(config: Partial<ProxyConfig> = {}, startFails = () => false) {
  const clock = new SimulatedClock();
  const calls: string[] = [];
  const failures: string[] = [];
  const actor = createActor(
    proxyMachine.provide({
      actors: {
        startProxy: fromPromise<void, { egress: string }>(({ input }) => {
          calls.push(`start ${input.egress}`);
          return startFails() ? Promise.reject(new Error('port taken')) : Promise.resolve();
        }),
        reloadProxy: fromPromise<void, { egress: string }>(({ input }) => {
          calls.push(`reload ${input.egress}`);
          return Promise.resolve();
        }),
        stopProxy: fromPromise<void>(() => {
          calls.push('stop');
          return Promise.resolve();
        }),
      },
      actions: { proxyFailed: (_, { detail }) => void failures.push(detail) },
    }),
    {
      clock,
      input: {
        egress: '10.0.0.1',
        config: { backoffBaseMs: 100, backoffCapMs: 400, maxRestarts: 3, restartWindowMs: 10_000, ...config },
        now: () => clock.now(),
      },
    },
  );
  actor.start();
  const state = () => stateString(actor.getSnapshot().value);
  const advance = async (ms: number) => {
    await settle();
    for (let t = 0; t < ms; t += 50) {
      clock.increment(50);
      await settle();
    }
  };
  return { actor, calls, failures, state, advance };
}

describe('proxy machine', () => {
  it('starts, reloads on a new address (3proxy), stops', async () => {
    const p = run();
    await p.advance(0);
    expect(p.state()).toBe('running');
    p.actor.send({ type: 'egress.changed', egress: '10.0.0.2' });
    await p.advance(0);
    expect(p.state()).toBe('running');
    p.actor.send({ type: 'stop' });
    await p.advance(0);
    expect(p.actor.getSnapshot().status).toBe('done');
    expect(p.calls).toEqual(['start 10.0.0.1', 'reload 10.0.0.2', 'stop']);
  });

  it('a backend without reload is replaced with the new address', async () => {
    const p = run({ canReload: false });
    await p.advance(0);
    p.actor.send({ type: 'egress.changed', egress: '10.0.0.9' });
    await p.advance(0);
    expect(p.calls).toEqual(['start 10.0.0.1', 'stop', 'start 10.0.0.9']);
    expect(p.state()).toBe('running');
  });

  it('new credentials replace the process, even one that can reload (no connection keeps the old ones)', async () => {
    const p = run();
    await p.advance(0);
    p.actor.send({ type: 'credentials.changed' });
    await p.advance(0);
    expect(p.calls).toEqual(['start 10.0.0.1', 'stop', 'start 10.0.0.1']);
    expect(p.state()).toBe('running');
    const q = run({ canReload: false });
    await q.advance(0);
    q.actor.send({ type: 'credentials.changed' });
    await q.advance(0);
    expect(q.calls).toEqual(['start 10.0.0.1', 'stop', 'start 10.0.0.1']);
    expect(q.state()).toBe('running');
    expect(q.actor.getSnapshot().context.credentialsStale).toBe(false);
    // not a crash: restart intensity is untouched
    expect(q.actor.getSnapshot().context.restarts).toEqual([]);
  });

  it('new credentials while the process starts: it is replaced once started (it may hold the old ones)', async () => {
    const p = run({ canReload: false });
    expect(p.state()).toBe('starting');
    p.actor.send({ type: 'credentials.changed' });
    await p.advance(0);
    expect(p.calls).toEqual(['start 10.0.0.1', 'stop', 'start 10.0.0.1']);
    expect(p.state()).toBe('running');
    expect(p.actor.getSnapshot().context.credentialsStale).toBe(false);
  });

  it('new credentials while 3proxy reloads a new address: replaced once the reload is done', async () => {
    const p = run();
    await p.advance(0);
    p.actor.send({ type: 'egress.changed', egress: '10.0.0.2' });
    expect(p.state()).toBe('reloading');
    p.actor.send({ type: 'credentials.changed' });
    await p.advance(0);
    expect(p.calls).toEqual(['start 10.0.0.1', 'reload 10.0.0.2', 'stop', 'start 10.0.0.2']);
    expect(p.state()).toBe('running');
  });

  it('an exit is restarted after a growing backoff; a crash loop trips restart intensity', async () => {
    const p = run();
    await p.advance(0);
    const startedAt: number[] = [];
    for (let i = 0; i < 4; i++) {
      p.actor.send({ type: 'proxy.exited', detail: 'killed' });
      await p.advance(0);
      if (p.state() === 'failed') break;
      const before = p.calls.length;
      let waited = 0;
      while (p.calls.length === before || p.calls.at(-1) === 'stop') {
        await p.advance(50);
        waited += 50;
      }
      startedAt.push(waited);
    }
    expect(startedAt).toEqual([100, 200, 400]);
    expect(p.state()).toBe('failed');
    expect(p.failures[0]).toMatch(/more than 3 times .* last: killed/);
  });

  it('a proxy that ran stably starts again from the shortest backoff', async () => {
    const p = run({ stableMs: 1_000, maxRestarts: 10 });
    await p.advance(0);
    p.actor.send({ type: 'proxy.exited', detail: 'x' });
    await p.advance(100); // restarted after 100 ms, attempt now 1
    p.actor.send({ type: 'proxy.exited', detail: 'x' });
    await p.advance(150);
    expect(p.state()).toBe('restarting.backoff'); // 200 ms this time
    await p.advance(100);
    expect(p.state()).toBe('running');
    await p.advance(1_000); // stable
    p.actor.send({ type: 'proxy.exited', detail: 'x' });
    await p.advance(100);
    expect(p.state()).toBe('running');
  });

  it('a start that fails (port taken, bad config) is retried under the same limit', async () => {
    const p = run({}, () => true);
    await p.advance(5_000);
    expect(p.state()).toBe('failed');
    expect(p.calls.filter((c) => c.startsWith('start'))).toHaveLength(4);
    expect(p.failures[0]).toMatch(/port taken/);
  });
});
