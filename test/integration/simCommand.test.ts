import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AtTransport } from '../../src/at/atTransport.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-simcli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('modemfleet sim', () => {
  it('prints one JSON line per modem, serves AT on each tty, and cleans up on SIGTERM', async () => {
    const profile = join(dir, 'profiles.json');
    await writeFile(profile, JSON.stringify([{ imei: '866834040000017', operator: 'Lab Net' }, {}]));
    const child = execa(
      'node',
      ['bin/modemfleet.js', 'sim', '--profile', profile, '--dir', join(dir, 'tty')],
      {
        reject: false,
      },
    );
    const lines: { imei: string; atPort: string; operator: string }[] = [];
    for await (const line of createInterface({ input: child.stdout })) {
      lines.push(JSON.parse(line) as (typeof lines)[number]);
      if (lines.length === 2) break;
    }
    expect(lines[0]).toMatchObject({ imei: '866834040000017', operator: 'Lab Net' });
    expect(lines[1]?.imei).toMatch(/^\d{15}$/);
    for (const { imei, atPort } of lines) {
      const t = new AtTransport({ path: atPort });
      await t.start();
      expect((await t.send('AT+CGSN')).lines).toEqual([imei]);
      await t.stop();
    }
    child.kill('SIGTERM');
    const result = await child;
    expect({ code: result.exitCode, signal: result.signal, stderr: result.stderr }).toEqual({
      code: 0,
      signal: undefined,
      stderr: '',
    });
    for (const { atPort } of lines) await expect(access(atPort)).rejects.toThrow();
    const left = await execa('pgrep', ['-f', `socat.*${dir}`], { reject: false });
    expect(left.stdout).toBe('');
  });

  it('bad input: a clear message and exit code, no modem started', async () => {
    const bad = join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify([{ imei: '12', faults: { hang: 'yes' } }]));
    const cases: [string[], number, RegExp][] = [
      [['sim', '--modems', '0'], 2, /--modems must be a whole number from 1 to 1000/],
      [['sim', '--modems', 'lots'], 2, /--modems must be a whole number/],
      [['sim', '--timing', 'slow'], 2, /--timing must be fast or realistic/],
      [
        ['sim', '--profile', bad],
        3,
        /profiles\[0\]\.imei: invalid.*\n?.*profiles\[0\]\.faults\.hang: must be a boolean/s,
      ],
      [['sim', '--profile', join(dir, 'missing.json')], 3, /missing\.json/],
    ];
    for (const [args, code, message] of cases) {
      const r = await execa('node', ['bin/modemfleet.js', ...args, '--dir', join(dir, 'none')], {
        reject: false,
      });
      expect({ args, code: r.exitCode }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });
});
