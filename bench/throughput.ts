import { loadavg } from 'node:os';
import { findProgram } from '../src/util/fs.js';
import { ThroughputLab, type LabState } from './throughputLab.js';

/**
 * Throughput through one port (issue 19 item 5): MB/s of a bulk download and upload on one
 * connection, and connections/s of short exchanges, through a modem's SOCKS5 port (microsocks) and
 * HTTP port (tinyproxy, CONNECT), in the lab (bench/throughputLab.ts), in these configurations:
 * - `direct`: no proxy; a socket in the farm bound to the modem's address (its policy route),
 *   nothing of ours on the path but the routing;
 * - `port`: through the port, traffic table and speed limits off (the routing, the egress policy
 *   and the proxies under their uid are on: they are the port);
 * - `accounted`: the same port with the traffic table (the modem's part, no quota) and speed limits
 *   on, set far above what the port moves (HTB and ifb are traversed, never binding);
 * - with `breakdown`, also the table alone and the limits alone.
 * They take turns within one run: for each path and figure, every configuration is measured back
 * to back (the table and the limits switched between them), in an order rotated each time, and
 * each repetition does this for every figure. A figure is the median over the repetitions; the
 * ratio is the median of the ratios of the pairs measured back to back (the shared machine's load
 * drifts within seconds). The processes on the path are pinned to two CPUs, the layout swapped
 * each repetition (`ThroughputLab.pin`: unpinned, where the scheduler put them decided a transfer's
 * speed more than any configuration). The target: `accounted` ≥ 0.9 × `port` in every figure. Beside the
 * throughput, the CPU time of the processes on the path per MB and per connection, a figure the
 * machine's other work disturbs less; and the kernel's counters, read before and after each
 * measurement with the table on, against what the customer's sockets wrote and read.
 */

export type SetupName = 'direct' | 'port' | 'accounted' | 'tableOnly' | 'limitsOnly';
type PathName = 'direct' | 'socks' | 'http';
type Figure = 'download' | 'upload' | 'conns';

interface Setup extends LabState {
  name: SetupName;
  paths: readonly PathName[];
}

const PORT_PATHS = ['socks', 'http'] as const;
const SETUPS: Record<SetupName, Setup> = {
  direct: { name: 'direct', paths: ['direct'], accounting: false, shaping: false },
  port: { name: 'port', paths: PORT_PATHS, accounting: false, shaping: false },
  accounted: { name: 'accounted', paths: PORT_PATHS, accounting: true, shaping: true },
  tableOnly: { name: 'tableOnly', paths: PORT_PATHS, accounting: true, shaping: false },
  limitsOnly: { name: 'limitsOnly', paths: PORT_PATHS, accounting: false, shaping: true },
};

export interface ThroughputSettings {
  bulkBytes: number;
  exchanges: number;
  concurrency: number;
  /** Bytes of one exchange's request (after the 16-byte header) and answer. */
  exchangeUp: number;
  exchangeDown: number;
  repetitions: number;
  /** Exchanges per path before anything is measured. */
  warmupExchanges: number;
  /** The speed limit set in `accounted`, both ways, kbit/s (HTB's maximum here: 10 Gbit/s). */
  limitKbps: number;
  breakdown: boolean;
}

export function throughputSettings(
  quick: boolean,
  breakdown: boolean,
  repetitions?: number,
): ThroughputSettings {
  return {
    // many short pairs rather than a few long ones: the ratio is a median of pairs
    bulkBytes: (quick ? 32 : 64) * 2 ** 20,
    exchanges: quick ? 300 : 2_000,
    concurrency: 4,
    exchangeUp: 200,
    exchangeDown: 2_048,
    // even: the two CPU layouts (ThroughputLab.pin) as often each
    repetitions: repetitions ?? (quick ? 4 : 16),
    warmupExchanges: 4_000,
    limitKbps: 10_000_000,
    breakdown,
  };
}

export interface PathFigures {
  downloadMBps: number;
  uploadMBps: number;
  connsPerSec: number;
}

/** CPU of the processes on the path (bench/throughputLab.ts `cpuMs`): µs per MB moved, per connection. */
export interface CpuFigures {
  downloadUsPerMB: number;
  uploadUsPerMB: number;
  usPerConn: number;
}

interface Samples {
  download: number[];
  upload: number[];
  conns: number[];
  /** CPU µs per MB (bulk) or per connection (exchanges), same order. */
  cpu: Record<Figure, number[]>;
}

export interface ThroughputFigures {
  skipped: string | null;
  settings?: ThroughputSettings;
  /** Median per configuration and path (MB = 10^6 bytes). */
  figures?: Partial<Record<SetupName, Partial<Record<PathName, PathFigures>>>>;
  /** Median CPU cost per configuration and path. */
  cpu?: Partial<Record<SetupName, Partial<Record<PathName, CpuFigures>>>>;
  /** accounted / port of the CPU cost, paired as `ratio` (> 1: the table and limits cost more). */
  cpuRatio?: Record<'socks' | 'http', CpuFigures>;
  samples?: Partial<Record<SetupName, Partial<Record<PathName, Samples>>>>;
  /**
   * accounted / port, per path and figure: the median of the ratios of the pairs measured back to
   * back; the target is ≥ 0.9 for each.
   */
  ratio?: Record<'socks' | 'http', PathFigures>;
  /** The same as the ratio of the medians (information: drifts with the machine's load). */
  ratioOfMedians?: Record<'socks' | 'http', PathFigures>;
  /** port / direct (information: what the proxy itself costs). */
  portVsDirect?: Record<'socks' | 'http', PathFigures>;
  /** tableOnly / port and limitsOnly / port, paired as `ratio` (with `breakdown`), and their CPU. */
  breakdown?: Partial<Record<'tableOnly' | 'limitsOnly', Record<'socks' | 'http', PathFigures>>>;
  breakdownCpu?: Partial<Record<'tableOnly' | 'limitsOnly', Record<'socks' | 'http', CpuFigures>>>;
  /** What the kernel counted with the table on, against what the customer's sockets moved. */
  accounting?: {
    download: { truth: number; counted: number; errorPct: number };
    upload: { truth: number; counted: number; errorPct: number };
    /** The largest error of one measurement (one transfer, or one run of exchanges). */
    worstMeasurementErrorPct: number;
  };
  /** The fastest transfer with the limits on, as a share of the limit (payload only). */
  limitShare?: number;
  /**
   * What the limits' HTB classes sent (link and ifb: L3 and Ethernet headers included) while the
   * customer's sockets moved `moved*` bytes with the limits on: everything went through them.
   */
  shaped?: { upload: number; download: number; movedUpload: number; movedDownload: number };
  minRatio?: number;
  targetMet?: boolean;
  problems?: string[];
  /** The processes on the path were pinned, two CPUs in turns (ThroughputLab.pin). */
  pinned?: boolean;
  loadBefore?: number[];
  loadAfter?: number[];
  seconds?: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
};
const round = (x: number, digits = 3): number => Number(x.toFixed(digits));
const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);
const divide = (a: PathFigures, b: PathFigures): PathFigures => ({
  downloadMBps: round(a.downloadMBps / b.downloadMBps),
  uploadMBps: round(a.uploadMBps / b.uploadMBps),
  connsPerSec: round(a.connsPerSec / b.connsPerSec),
});

const FIGURES: readonly Figure[] = ['download', 'upload', 'conns'];
const KEY: Record<Figure, keyof PathFigures> = {
  download: 'downloadMBps',
  upload: 'uploadMBps',
  conns: 'connsPerSec',
};

export async function throughputBenchmark(settings: ThroughputSettings): Promise<ThroughputFigures> {
  if (process.getuid?.() !== 0)
    return { skipped: 'needs root (network namespaces, nftables, tc): run as root to measure it' };
  for (const program of ['microsocks', 'tinyproxy', 'nft', 'tc'])
    if (!(await findProgram(program)))
      return { skipped: `${program} is not installed (bash scripts/setup.sh)` };
  const started = Date.now();
  const loadBefore = loadavg().map((x) => round(x, 2));
  const portSetups = (['port', 'accounted'] as SetupName[])
    .concat(settings.breakdown ? ['tableOnly', 'limitsOnly'] : [])
    .map((n) => SETUPS[n]);
  const samples: Partial<Record<SetupName, Partial<Record<PathName, Samples>>>> = {};
  const truth = { download: 0, upload: 0 };
  const counted = { download: 0, upload: 0 };
  let worst = 0;
  const shaped = { upload: 0, download: 0, movedUpload: 0, movedDownload: 0 };
  const lab = new ThroughputLab(settings.limitKbps);
  let pinned: [number, number] | null = null;
  try {
    await lab.start();
    /** One figure of one path in one configuration; the kernel's count checked when the table is on. */
    const measure = async (
      setup: Setup,
      path: PathName,
      figure: Figure,
      scale: number,
    ): Promise<{ value: number; cpu: number }> => {
      await lab.set(setup);
      const before = await lab.reading();
      const shapedBefore = setup.shaping ? await lab.shapedBytes() : null;
      const cpuBefore = await lab.cpuMs();
      const bytes = Math.round(settings.bulkBytes * scale);
      const r = await lab.job(
        path,
        figure === 'conns'
          ? {
              op: 'exchanges',
              count: Math.max(1, Math.round(settings.exchanges * scale)),
              concurrency: settings.concurrency,
              up: settings.exchangeUp,
              down: settings.exchangeDown,
            }
          : { op: figure === 'download' ? 'down' : 'up', bytes },
      );
      if (r.error !== null) throw new Error(`${setup.name} ${path} ${figure}: ${r.error}`);
      const cpuUs = ((await lab.cpuMs()) - cpuBefore) * 1000;
      const after = await lab.reading();
      if (shapedBefore) {
        const now = await lab.shapedBytes();
        shaped.upload += now.upload - shapedBefore.upload;
        shaped.download += now.download - shapedBefore.download;
        shaped.movedUpload += r.bytesWritten;
        shaped.movedDownload += r.bytesRead;
      }
      if (setup.accounting && before && after) {
        const moved = { download: r.bytesRead, upload: r.bytesWritten };
        for (const d of ['download', 'upload'] as const) {
          const got = after[d] - before[d];
          truth[d] += moved[d];
          counted[d] += got;
          worst = Math.max(worst, Math.abs((100 * (got - moved[d])) / moved[d]));
        }
      }
      return figure === 'conns'
        ? { value: r.connections / (r.ms / 1000), cpu: cpuUs / r.connections }
        : { value: mbps(bytes, r.ms), cpu: cpuUs / (bytes / 1e6) };
    };
    /**
     * Every configuration of a path measured back to back, figure by figure, in an order rotated
     * each time (the table and the limits are switched between them): a load spike of the shared
     * machine falls on all of them, and each pair is compared within seconds.
     */
    const repetition = async (rep: number, scale: number, record: boolean): Promise<void> => {
      pinned = await lab.pin(rep % 2 === 0 ? 0 : 1);
      let turn = rep;
      for (const path of ['direct', ...PORT_PATHS] as const) {
        const setups = path === 'direct' ? [SETUPS.direct] : portSetups;
        for (const figure of FIGURES) {
          turn++;
          for (let i = 0; i < setups.length; i++) {
            const setup = setups[(i + turn) % setups.length]!;
            const m = await measure(setup, path, figure, scale);
            if (!record) continue;
            const s = ((samples[setup.name] ??= {})[path] ??= {
              download: [],
              upload: [],
              conns: [],
              cpu: { download: [], upload: [], conns: [] },
            });
            s[figure][rep] = m.value;
            s.cpu[figure][rep] = m.cpu;
          }
        }
      }
    };
    await lab.pin(0);
    // warm-up (not recorded): the agents' and the sink's JIT (connections/s climbs ~2x over the
    // first few thousand exchanges), ARP, the proxies' first threads; then one round at 1/8
    for (const path of ['direct', ...PORT_PATHS] as const) {
      const r = await lab.job(path, {
        op: 'exchanges',
        count: settings.warmupExchanges,
        concurrency: settings.concurrency,
        up: settings.exchangeUp,
        down: settings.exchangeDown,
      });
      if (r.error !== null) throw new Error(`warm-up ${path}: ${r.error}`);
    }
    await repetition(0, 0.125, false);
    truth.download = truth.upload = counted.download = counted.upload = worst = 0;
    shaped.upload = shaped.download = shaped.movedUpload = shaped.movedDownload = 0;
    for (let rep = 0; rep < settings.repetitions; rep++) {
      await repetition(rep, 1, true);
      process.stdout.write(`throughput: repetition ${rep + 1}/${settings.repetitions} done\n`);
    }
    const figures: NonNullable<ThroughputFigures['figures']> = {};
    for (const [name, paths] of Object.entries(samples) as [SetupName, Partial<Record<PathName, Samples>>][])
      for (const [path, s] of Object.entries(paths) as [PathName, Samples][])
        (figures[name] ??= {})[path] = {
          downloadMBps: round(median(s.download), 1),
          uploadMBps: round(median(s.upload), 1),
          connsPerSec: round(median(s.conns), 1),
        };
    const cpu: NonNullable<ThroughputFigures['cpu']> = {};
    for (const [name, paths] of Object.entries(samples) as [SetupName, Partial<Record<PathName, Samples>>][])
      for (const [path, s] of Object.entries(paths) as [PathName, Samples][])
        (cpu[name] ??= {})[path] = {
          downloadUsPerMB: round(median(s.cpu.download), 0),
          uploadUsPerMB: round(median(s.cpu.upload), 0),
          usPerConn: round(median(s.cpu.conns), 0),
        };
    const sampled = (name: SetupName, path: PathName): Samples => {
      const s = samples[name]?.[path];
      if (!s) throw new Error(`no samples for ${name} ${path}`);
      return s;
    };
    /** The median of the ratios of the pairs measured back to back in each repetition. */
    const paired = (a: SetupName, b: SetupName, path: 'socks' | 'http'): PathFigures => {
      const x = sampled(a, path);
      const y = sampled(b, path);
      const ratioOf = (f: Figure): number => round(median(x[f].map((v, i) => v / (y[f][i] ?? NaN))));
      return {
        downloadMBps: ratioOf('download'),
        uploadMBps: ratioOf('upload'),
        connsPerSec: ratioOf('conns'),
      };
    };
    const ratio = { socks: paired('accounted', 'port', 'socks'), http: paired('accounted', 'port', 'http') };
    const pairedCpu = (a: SetupName, b: SetupName, path: 'socks' | 'http'): CpuFigures => {
      const x = sampled(a, path).cpu;
      const y = sampled(b, path).cpu;
      const ratioOf = (f: Figure): number => round(median(x[f].map((v, i) => v / (y[f][i] ?? NaN))));
      return {
        downloadUsPerMB: ratioOf('download'),
        uploadUsPerMB: ratioOf('upload'),
        usPerConn: ratioOf('conns'),
      };
    };
    const ofMedians = (
      a: SetupName,
      b: SetupName,
      path: 'socks' | 'http',
      bPath: PathName = path,
    ): PathFigures => {
      const x = figures[a]?.[path];
      const y = figures[b]?.[bPath];
      if (!x || !y) throw new Error(`no figures for ${a} ${path} or ${b} ${bPath}`);
      return divide(x, y);
    };
    const breakdown: NonNullable<ThroughputFigures['breakdown']> = {};
    const breakdownCpu: NonNullable<ThroughputFigures['breakdownCpu']> = {};
    if (settings.breakdown)
      for (const name of ['tableOnly', 'limitsOnly'] as const) {
        breakdown[name] = { socks: paired(name, 'port', 'socks'), http: paired(name, 'port', 'http') };
        breakdownCpu[name] = {
          socks: pairedCpu(name, 'port', 'socks'),
          http: pairedCpu(name, 'port', 'http'),
        };
      }
    const minRatio = Math.min(...[ratio.socks, ratio.http].flatMap((r) => FIGURES.map((f) => r[KEY[f]])));
    const accounted = samples.accounted ?? {};
    const fastest = Math.max(
      ...PORT_PATHS.flatMap((p) => [...(accounted[p]?.download ?? []), ...(accounted[p]?.upload ?? [])]),
    );
    const errorPct = (d: 'download' | 'upload'): number =>
      round((100 * (counted[d] - truth[d])) / truth[d], 4);
    return {
      skipped: null,
      settings,
      figures,
      samples,
      ratio,
      cpu,
      cpuRatio: {
        socks: pairedCpu('accounted', 'port', 'socks'),
        http: pairedCpu('accounted', 'port', 'http'),
      },
      ratioOfMedians: {
        socks: ofMedians('accounted', 'port', 'socks'),
        http: ofMedians('accounted', 'port', 'http'),
      },
      portVsDirect: {
        socks: ofMedians('port', 'direct', 'socks', 'direct'),
        http: ofMedians('port', 'direct', 'http', 'direct'),
      },
      ...(settings.breakdown ? { breakdown, breakdownCpu } : {}),
      accounting: {
        download: { truth: truth.download, counted: counted.download, errorPct: errorPct('download') },
        upload: { truth: truth.upload, counted: counted.upload, errorPct: errorPct('upload') },
        worstMeasurementErrorPct: round(worst, 4),
      },
      limitShare: round((fastest * 8_000) / settings.limitKbps, 3),
      shaped,
      minRatio,
      targetMet: minRatio >= 0.9,
      problems: [...lab.problems],
      pinned: pinned !== null,
      loadBefore,
      loadAfter: loadavg().map((x) => round(x, 2)),
      seconds: Math.round((Date.now() - started) / 1000),
    };
  } finally {
    await lab.stop();
  }
}

type Row = { figure: string; 'measured against': string; ratio: string; target: string };

/** The benchmark's rows of the printed table. */
export function throughputRows(t: ThroughputFigures): Record<string, Row> {
  if (t.skipped !== null || !t.settings)
    return {
      'throughput through one port': {
        figure: `skipped: ${t.skipped ?? 'no figures'}`,
        'measured against': '-',
        ratio: '-',
        target: 'not measured',
      },
    };
  const s = t.settings;
  const f = t.figures ?? {};
  const line = (x: PathFigures | undefined): string =>
    x ? `down ${x.downloadMBps} MB/s, up ${x.uploadMBps} MB/s, ${x.connsPerSec} conn/s` : '-';
  const ratios = (x: PathFigures | undefined): string =>
    x ? `${x.downloadMBps} / ${x.uploadMBps} / ${x.connsPerSec}` : '-';
  const cpu = (x: CpuFigures | undefined): string =>
    x ? `${x.downloadUsPerMB} / ${x.uploadUsPerMB} µs per MB, ${x.usPerConn} µs per conn` : '-';
  const cpuRatios = (x: CpuFigures | undefined): string =>
    x ? `${x.downloadUsPerMB} / ${x.uploadUsPerMB} / ${x.usPerConn}` : '-';
  const through = (a: number | undefined, b: number | undefined): string =>
    a !== undefined && b ? `${((100 * a) / b).toFixed(1)}%` : '-';
  const met = (x: PathFigures | undefined): string =>
    x && Math.min(x.downloadMBps, x.uploadMBps, x.connsPerSec) >= 0.9 ? 'met' : 'MISSED';
  const rows: Record<string, Row> = {};
  const sizes = `${s.bulkBytes / 2 ** 20} MiB on one connection, ${s.exchanges} exchanges ${s.concurrency} at a time; median of ${s.repetitions}${t.pinned ? ', processes pinned (client agents / proxies and sink on two CPUs, swapped each repetition)' : ', not pinned (fewer than 2 CPUs)'}`;
  for (const path of PORT_PATHS)
    rows[
      `throughput, one ${path === 'socks' ? 'SOCKS5 (microsocks)' : 'HTTP CONNECT (tinyproxy)'} port: traffic table + limits on`
    ] = {
      figure: line(f.accounted?.[path]),
      'measured against': `the port with both off: ${line(f.port?.[path])}; direct: ${line(f.direct?.direct)} (${sizes})`,
      ratio: `${ratios(t.ratio?.[path])} (down / up / conn, paired)`,
      target: `>= 0.9x the port without (${met(t.ratio?.[path])})`,
    };
  rows['throughput: the kernel counted, the CPU it cost'] = {
    figure: `counted vs the customer's sockets: down ${t.accounting?.download.errorPct}%, up ${t.accounting?.upload.errorPct}% (worst single transfer ${t.accounting?.worstMeasurementErrorPct}%); limits ${s.limitKbps / 1e6} Gbit/s both ways, fastest transfer ${((t.limitShare ?? 0) * 100).toFixed(0)}% of it (not binding), their HTB classes sent ${through(t.shaped?.upload, t.shaped?.movedUpload)} up and ${through(t.shaped?.download, t.shaped?.movedDownload)} down of what the sockets moved; CPU with both on: socks ${cpu(t.cpu?.accounted?.socks)}, http ${cpu(t.cpu?.accounted?.http)}`,
    'measured against': `CPU with both off: socks ${cpu(t.cpu?.port?.socks)}, http ${cpu(t.cpu?.port?.http)}`,
    ratio: `CPU socks ${cpuRatios(t.cpuRatio?.socks)}, http ${cpuRatios(t.cpuRatio?.http)} (down / up / conn, paired)`,
    target: '-',
  };
  for (const name of ['tableOnly', 'limitsOnly'] as const) {
    const b = t.breakdown?.[name];
    if (b)
      rows[`throughput: ${name === 'tableOnly' ? 'the traffic table alone' : 'the speed limits alone'}`] = {
        figure: `socks ${line(f[name]?.socks)}; http ${line(f[name]?.http)}`,
        'measured against': 'the port with both off (above)',
        ratio: `socks ${ratios(b.socks)}, http ${ratios(b.http)}; CPU socks ${cpuRatios(t.breakdownCpu?.[name]?.socks)}, http ${cpuRatios(t.breakdownCpu?.[name]?.http)}`,
        target: '-',
      };
  }
  return rows;
}
