import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseScheduleArgs } from '../../src/cli/schedule.js';
import { loadConfig } from '../../src/config.js';
import { parseDuration, scheduleProblems, settingProblems } from '../../src/fleet/rotationSchedule.js';
import { ConfigError } from '../../src/util/errors.js';

const IMEI = '356000000000042';

describe('modemfleet schedule: arguments', () => {
  it('reads durations in seconds, minutes and hours', () => {
    expect(parseDuration('90s')).toBe(90);
    expect(parseDuration('10m')).toBe(600);
    expect(parseDuration('1h')).toBe(3_600);
    expect(parseDuration('600')).toBe(600);
    for (const bad of ['', '1d', '-5m', '1.5m', 'm', '10 m', '10mm', '99999999h'])
      expect(parseDuration(bad), bad).toBeUndefined();
  });

  it('schedule IMEI 10m [--jitter 1m], schedule IMEI --off and schedule IMEI --default', () => {
    expect(parseScheduleArgs([IMEI, '10m'], { jitter: '1m' })).toEqual({
      imei: IMEI,
      schedule: { intervalSeconds: 600, jitterSeconds: 60 },
    });
    expect(parseScheduleArgs([IMEI, '90s'], {})).toEqual({
      imei: IMEI,
      schedule: { intervalSeconds: 90, jitterSeconds: 0 },
    });
    expect(parseScheduleArgs([IMEI], { off: true })).toEqual({ imei: IMEI, schedule: { off: true } });
    expect(parseScheduleArgs([IMEI], { default: true })).toEqual({ imei: IMEI, schedule: null });
  });

  it('refuses bad arguments as usage errors', () => {
    const refused: [string[], Record<string, unknown>, RegExp][] = [
      [['12345', '10m'], {}, /imei must be 15 digits/],
      [[IMEI], {}, /an interval, --off or --default/],
      [[IMEI, 'ten'], {}, /INTERVAL must be a duration like 90s, 10m or 1h/],
      [[IMEI, '10m'], { jitter: '1 min' }, /--jitter must be a duration/],
      [[IMEI, '10m'], { off: true }, /--off takes no interval/],
      [[IMEI], { default: true, jitter: '1m' }, /--default takes no interval or jitter/],
      [[IMEI], { off: true, default: true }, /--off or --default, not both/],
    ];
    for (const [positionals, values, message] of refused)
      expect(() => parseScheduleArgs(positionals, values)).toThrow(
        expect.objectContaining({ code: 'usage', message: expect.stringMatching(message) as unknown }),
      );
  });
});

describe('schedule ranges', () => {
  it("a modem's own setting may be { off: true } alone", () => {
    expect(settingProblems({ off: true }, 60)).toEqual([]);
    expect(settingProblems({ off: false }, 60)).toHaveLength(1);
    expect(settingProblems({ off: true, intervalSeconds: 600 }, 60)).toHaveLength(1);
    expect(settingProblems({ intervalSeconds: 600 }, 60)).toEqual([]);
    expect(settingProblems({ intervalSeconds: 6 }, 60)).toHaveLength(1);
  });

  it('interval from the floor to 30 days, jitter below the interval', () => {
    expect(scheduleProblems({ intervalSeconds: 600, jitterSeconds: 60 }, 60)).toEqual([]);
    expect(scheduleProblems({ intervalSeconds: 60 }, 60)).toEqual([]);
    expect(scheduleProblems({ intervalSeconds: 2 }, 1)).toEqual([]);
    expect(scheduleProblems({ intervalSeconds: 59 }, 60)).toEqual([
      'intervalSeconds: must be a whole number of seconds from 60 to 2592000',
    ]);
    expect(scheduleProblems({ intervalSeconds: 600, jitterSeconds: 600 }, 60)).toEqual([
      'jitterSeconds: must be less than intervalSeconds (600)',
    ]);
    expect(scheduleProblems({ intervalSeconds: '600', jitterSeconds: -1, extra: 1 }, 60)).toEqual([
      'extra: unknown setting',
      'intervalSeconds: must be a whole number of seconds from 60 to 2592000',
      'jitterSeconds: must be a whole number of seconds, 0 or more',
    ]);
    expect(scheduleProblems([], 60)).toHaveLength(1);
  });
});

describe('config rotation.schedule', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mf-schedule-'));
  const load = (content: unknown) => {
    const path = join(dir, 'c.json');
    writeFileSync(path, JSON.stringify(content));
    return loadConfig({ env: {}, file: path });
  };
  const problems = (content: unknown): readonly string[] => {
    try {
      load(content);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    throw new Error('expected a ConfigError');
  };

  it('is the farm default, unset by default', () => {
    expect(loadConfig({ env: {} }).rotation.schedule).toBeUndefined();
    expect(load({ rotation: { schedule: { intervalSeconds: 600, jitterSeconds: 60 } } }).rotation).toEqual({
      schedule: { intervalSeconds: 600, jitterSeconds: 60 },
      noReuse: undefined,
    });
    // the floor is the policy's
    expect(
      load({ policy: { rotationScheduleMinSeconds: 5 }, rotation: { schedule: { intervalSeconds: 10 } } })
        .rotation.schedule,
    ).toEqual({ intervalSeconds: 10, jitterSeconds: 0 });
  });

  it('reports every problem as path: message', () => {
    expect(
      problems({ rotation: { schedule: { intervalSeconds: 30, jitterSeconds: 40 }, every: 1 } }),
    ).toEqual([
      'rotation.every: unknown setting',
      'rotation.schedule.intervalSeconds: must be a whole number of seconds from 60 to 2592000',
      'rotation.schedule.jitterSeconds: must be less than intervalSeconds (30)',
    ]);
    expect(problems({ rotation: 5 })).toEqual([
      'rotation: must be { "schedule": { "intervalSeconds", "jitterSeconds" }, "noReuseHours": number, "noReuseScope": "modem" | "farm" }',
    ]);
  });

  it('noReuseHours (1 to 720) with noReuseScope modem (the default) or farm', () => {
    expect(load({ rotation: { noReuseHours: 24 } }).rotation.noReuse).toEqual({ hours: 24, scope: 'modem' });
    expect(load({ rotation: { noReuseHours: 6, noReuseScope: 'farm' } }).rotation.noReuse).toEqual({
      hours: 6,
      scope: 'farm',
    });
    expect(problems({ rotation: { noReuseHours: 0 } })).toEqual([
      'rotation.noReuseHours: must be a whole number of hours from 1 to 720',
    ]);
    expect(problems({ rotation: { noReuseHours: 1.5, noReuseScope: 'host' } })).toEqual([
      'rotation.noReuseScope: must be "modem" or "farm"',
      'rotation.noReuseHours: must be a whole number of hours from 1 to 720',
    ]);
    expect(problems({ rotation: { noReuseScope: 'farm' } })).toEqual([
      'rotation.noReuseScope: needs rotation.noReuseHours',
    ]);
  });
});
