import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EGRESS_TABLE, EgressPolicy } from '../../src/net/egressPolicy.js';
import { ip } from '../../src/net/ip.js';
import { readTable } from '../../src/net/nft.js';
import { run, spawnChild, unprivilegedPrefix, type Child } from '../../src/process/run.js';

/**
 * The egress policy's life in one namespace, with real nftables and real sockets: applied with no
 * modem admitted, a proxy uid reaches only `allow`; admitting and releasing a modem adds and
 * removes its rules (a second admission of the same uid holds them); root is never affected;
 * stop removes the table, and nothing is admitted after it.
 */

const root = process.getuid?.() === 0;
const ns = `mfep${randomBytes(2).toString('hex')}`;
const PORT = 9131;
let server: Child | undefined;

/** curl inside the namespace, as `uid` (no capabilities) or as root; true when the server answered. */
async function reaches(target: string, uid?: number): Promise<boolean> {
  const user = uid === undefined ? [] : unprivilegedPrefix({ uid, gid: uid });
  const r = await run(
    'ip',
    [
      'netns',
      'exec',
      ns,
      ...user,
      'curl',
      '-sS',
      '--max-time',
      '3',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      target,
    ],
    { timeoutMs: 10_000 },
  );
  return r.stdout.trim() === '200';
}

const modemRules = async (): Promise<string[]> =>
  ((await readTable('inet', EGRESS_TABLE, { netns: ns }))?.rules ?? [])
    .map((r) => r.comment ?? '')
    .filter((c) => c.startsWith('modem uid'));

describe.runIf(root)('egress policy in a namespace', () => {
  let policy: EgressPolicy;

  beforeAll(async () => {
    await ip(['netns', 'add', ns]);
    await ip(['link', 'set', 'lo', 'up'], { netns: ns });
    await ip(['addr', 'add', '127.0.0.2/8', 'dev', 'lo'], { netns: ns }).catch(() => undefined);
    server = spawnChild(
      'ip',
      ['netns', 'exec', ns, 'python3', '-m', 'http.server', '--bind', '::', String(PORT)],
      {
        detached: true,
        cleanup: false,
      },
    );
    const deadline = Date.now() + 10_000;
    while (!(await reaches(`http://127.0.0.1:${PORT}/`)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    policy = new EgressPolicy({
      uids: { from: 61_900, to: 61_909 },
      allow: ['127.0.0.2'],
      deny: [],
      internet: true,
      netns: ns,
    });
  });

  afterAll(async () => {
    if (server?.pid)
      try {
        process.kill(-server.pid, 'SIGKILL');
      } catch {
        // gone
      }
    await run('ip', ['netns', 'del', ns]);
  });

  it('refuses the host to every proxy uid, allows `allow`, leaves root and other uids alone', async () => {
    expect(await reaches(`http://127.0.0.1:${PORT}/`, 61_905)).toBe(true); // no policy yet
    await policy.start();
    expect(await reaches(`http://127.0.0.1:${PORT}/`)).toBe(true); // root
    expect(await reaches(`http://127.0.0.1:${PORT}/`, 61_910)).toBe(true); // outside the range
    expect(await reaches(`http://127.0.0.1:${PORT}/`, 61_905)).toBe(false);
    expect(await reaches(`http://[::1]:${PORT}/`, 61_905)).toBe(false);
    expect(await reaches(`http://127.0.0.2:${PORT}/`, 61_905)).toBe(true); // allowed
  });

  it('admit and release: per-modem rules come and go; a second admission holds them', async () => {
    await policy.admit(61_901, 'wwan1');
    await policy.admit(61_902, 'wwan2');
    expect(await modemRules()).toEqual([
      'modem uid 61901 via wwan1',
      'modem uid 61901 via wwan1',
      'modem uid 61901 via wwan1',
      'modem uid 61902 via wwan2',
      'modem uid 61902 via wwan2',
      'modem uid 61902 via wwan2',
    ]);
    await policy.admit(61_901, 'wwan1'); // a replacement data plane before the old one released
    await policy.release(61_901, 'wwan1');
    expect((await modemRules()).filter((c) => c.includes('61901'))).toHaveLength(3);
    await policy.release(61_901, 'wwan1');
    await policy.release(61_902, 'wwan2');
    expect(await modemRules()).toEqual([]);
    // admitted or not, the host stays refused
    expect(await reaches(`http://127.0.0.1:${PORT}/`, 61_901)).toBe(false);
  });

  it('stop removes the table; nothing is admitted after it', async () => {
    await policy.stop();
    expect(await readTable('inet', EGRESS_TABLE, { netns: ns })).toBeNull();
    await expect(policy.admit(61_903, 'wwan3')).rejects.toThrow(/egress policy is not applied/);
    expect(await readTable('inet', EGRESS_TABLE, { netns: ns })).toBeNull();
  });
});
