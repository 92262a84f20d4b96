import { userInfo } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import {
  CREDENTIALS_USAGE,
  ROTATE_WAIT_SECONDS,
  TOKEN_USAGE,
  credentialsCommand,
  tokenCommand,
} from './cli/access.js';
import { BACKUP_USAGE, RESTORE_USAGE, backupCommand, restoreCommand } from './cli/backup.js';
import { EXIT, UsageError, exitCodeFor } from './cli/exitCodes.js';
import { formatFindings, runDoctor } from './cli/doctor.js';
import {
  ACCESS_WAIT_SECONDS,
  ALLOWLIST_USAGE,
  LIMITS_USAGE,
  LOGINS_USAGE,
  allowlistCommand,
  limitsCommand,
  loginsCommand,
} from './cli/proxyAccess.js';
import { SCHEDULE_USAGE, parseScheduleArgs } from './cli/schedule.js';
import { QUOTA_USAGE, parseQuotaArgs, quotaCommand } from './cli/quota.js';
import { SILENCE_USAGE, parseSilenceArgs } from './cli/silence.js';
import { formatStatusTable } from './cli/status.js';
import { loadConfig, parseListen, type ConfigMode } from './config.js';
import { runDaemon } from './daemon.js';
import { runDemo } from './demo.js';
import { DEFAULT_ECHO_LISTEN, runEcho } from './echo.js';
import { TIMING_NAMES, type TimingName } from './sim/profiles.js';
import { runSim } from './sim/simCommand.js';
import { createRootLogger, type Logger } from './log.js';
import { stopLeftProxies } from './net/leftProxies.js';
import { proxyRunDir } from './net/proxyRunDir.js';
import { migrate } from './store/migrate.js';
import { COMMAND_KINDS, type CommandKind } from './store/types.js';
import { withSystem, type SystemOptions } from './system.js';
import { ModemfleetError, coerceError, errorChain } from './util/errors.js';

interface CommandSpec {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** How many positional arguments: exactly N, or from/to. */
  positionals?: number | readonly [number, number];
  run(args: { values: Record<string, unknown>; positionals: string[]; log: Logger }): Promise<number>;
}

const configOption = { config: { type: 'string' as const, short: 'c' } };

function config(values: Record<string, unknown>, mode: ConfigMode = 'production') {
  return loadConfig({ file: typeof values['config'] === 'string' ? values['config'] : undefined, mode });
}

/**
 * A one-shot command's database: DATABASE_URL, or the embedded server of the modemfleet running on
 * this state dir (never one of its own: a one-shot run as root must not change the service's
 * files; without a running farm it says so at once); the schema is checked (a changed migration is
 * refused) and pending migrations applied.
 */
const oneShot = (log: Logger): SystemOptions => ({
  application: 'modemfleet-cli',
  max: 4,
  embedded: 'running',
  migrations: 'check',
  log,
});

const stringOption = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

/** `--timing fast|realistic` of the simulated modems (default fast). */
function timingOption(value: unknown): TimingName {
  const v = stringOption(value) ?? 'fast';
  if (!(TIMING_NAMES as readonly string[]).includes(v))
    throw new UsageError('--timing must be fast or realistic');
  return v as TimingName;
}

function intOption(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value) || n < min || n > max)
    throw new UsageError(
      `${name} must be a whole number from ${min} to ${max}, not '${typeof value === 'string' ? value.slice(0, 20) : typeof value}'`,
    );
  return n;
}

const commandRunner =
  (kind: CommandKind): CommandSpec['run'] =>
  async ({ values, positionals, log }) => {
    const imei = positionals[0] ?? '';
    const id = await withSystem(config(values), oneShot(log), ({ store }) =>
      store.insertCommand(imei, kind, `cli:${userInfo().username}`),
    );
    process.stdout.write(`${JSON.stringify({ id, imei, kind, status: 'pending' })}\n`);
    return EXIT.ok;
  };

const COMMANDS: Record<string, CommandSpec> = {
  run: {
    summary: 'run the supervisor daemon',
    usage: 'run [--config FILE]',
    options: configOption,
    run: async ({ values }) => {
      // the daemon logs JSON lines to stdout (journald)
      return runDaemon(config(values), createRootLogger());
    },
  },
  'stop-proxies': {
    summary:
      'stop the proxies a supervisor handed over (SIGTERM) while none runs, with their routing and the egress policy',
    usage: 'stop-proxies [--config FILE]',
    options: configOption,
    run: async ({ values, log }) => {
      const dataPlane = config(values).dataPlane;
      // the run dir the daemon uses (moved where the proxies' uids reach it, as the daemon does)
      const out = dataPlane
        ? await stopLeftProxies(
            await proxyRunDir(dataPlane.runDir, dataPlane.proxyUidBase !== undefined, log),
            { netns: dataPlane.netns, log },
          )
        : { stopped: 0, routes: 0 };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  demo: {
    summary: 'run a simulated farm with the inspector',
    usage:
      'demo [--modems N] [--http HOST:PORT] [--proxy auto|3proxy|microsocks|tinyproxy] [--state-dir DIR] [--timing fast|realistic]',
    options: {
      modems: { type: 'string' },
      timing: { type: 'string' },
      http: { type: 'string' },
      proxy: { type: 'string' },
      'state-dir': { type: 'string' },
    },
    run: async ({ values, log }) => {
      const proxy = stringOption(values['proxy']) ?? 'auto';
      if (!['auto', '3proxy', 'microsocks', 'tinyproxy'].includes(proxy))
        throw new UsageError('--proxy must be auto, 3proxy, microsocks or tinyproxy');
      const stateDir = stringOption(values['state-dir']);
      const demoConfig = loadConfig({
        env: { ...process.env, ...(stateDir ? { MODEMFLEET_STATE_DIR: stateDir } : {}) },
        mode: 'demo',
      });
      const problems: string[] = [];
      const http = parseListen(stringOption(values['http']) ?? '127.0.0.1:8080', '--http', problems);
      if (!http) throw new UsageError(problems[0] ?? '--http must be HOST:PORT');
      return runDemo(
        demoConfig,
        {
          modems: intOption(values['modems'], '--modems', 8, 1, 200),
          http,
          proxy: proxy as 'auto' | '3proxy' | 'microsocks' | 'tinyproxy',
          timing: timingOption(values['timing']),
          print: (line) => process.stdout.write(`${line}\n`),
        },
        log,
      );
    },
  },
  sim: {
    summary: 'run only the EC25 simulator; prints one JSON line per modem',
    usage: 'sim [--modems N] [--profile FILE] [--dir DIR] [--timing fast|realistic]',
    options: {
      modems: { type: 'string' },
      profile: { type: 'string' },
      dir: { type: 'string' },
      timing: { type: 'string' },
    },
    run: async ({ values, log }) => {
      const modems = intOption(values['modems'], '--modems', 8, 1, 1_000);
      const timing = timingOption(values['timing']);
      await runSim({
        modems,
        timing,
        profileFile: stringOption(values['profile']),
        dir: stringOption(values['dir']),
        log,
      });
      return EXIT.ok;
    },
  },
  migrate: {
    summary: 'apply database migrations',
    usage: 'migrate [--config FILE]',
    options: configOption,
    run: async ({ values, log }) => {
      const { applied } = await withSystem(
        config(values),
        { ...oneShot(log), migrations: 'none' },
        ({ sql }) => migrate(sql, { log }),
      );
      process.stdout.write(applied.length ? `${applied.join('\n')}\n` : 'database schema is up to date\n');
      return EXIT.ok;
    },
  },
  status: {
    summary:
      'show every modem: state, time in state, address, ports, operator, signal, traffic today and this month',
    usage: 'status [--json] [--config FILE]',
    options: { ...configOption, json: { type: 'boolean' } },
    run: async ({ values, log }) => {
      const { modems, traffic } = await withSystem(config(values), oneShot(log), async ({ store }) => ({
        modems: await store.modems(),
        traffic: await store.trafficTotals(),
      }));
      process.stdout.write(
        values['json']
          ? `${JSON.stringify(modems.map((m) => ({ ...m, traffic: traffic.get(m.imei) ?? null })))}\n`
          : `${formatStatusTable(modems, Date.now(), traffic)}\n`,
      );
      return EXIT.ok;
    },
  },
  ...Object.fromEntries(
    COMMAND_KINDS.map((kind) => [
      kind,
      {
        summary: `queue a ${kind} command for one modem`,
        usage: `${kind} IMEI [--config FILE]`,
        options: configOption,
        positionals: 1,
        run: commandRunner(kind),
      } satisfies CommandSpec,
    ]),
  ),
  credentials: {
    summary: "show a modem's proxy login; --rotate: a new password (the old one stops working)",
    usage: CREDENTIALS_USAGE,
    options: { ...configOption, rotate: { type: 'boolean' }, wait: { type: 'string' } },
    positionals: 1,
    run: async ({ values, positionals, log }) => {
      const wait = intOption(values['wait'], '--wait', ROTATE_WAIT_SECONDS, 0, 600);
      if (values['wait'] !== undefined && values['rotate'] !== true)
        throw new UsageError('--wait goes with --rotate');
      const out = await withSystem(config(values), oneShot(log), ({ store }) =>
        credentialsCommand(
          store,
          positionals[0] ?? '',
          values['rotate'] === true,
          `cli:${userInfo().username}`,
          wait,
        ),
      );
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  logins: {
    summary: "list a modem's logins, add one (own password, optional expiry) or remove one",
    usage: LOGINS_USAGE,
    options: {
      ...configOption,
      password: { type: 'string' },
      expires: { type: 'string' },
      ports: { type: 'string' },
      wait: { type: 'string' },
    },
    positionals: [1, 4],
    run: async ({ values, positionals, log }) => {
      const wait = intOption(values['wait'], '--wait', ACCESS_WAIT_SECONDS, 0, 600);
      const out = await withSystem(config(values), oneShot(log), ({ store }) =>
        loginsCommand(store, positionals, values, `cli:${userInfo().username}`, wait),
      );
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  allowlist: {
    summary: "show or set a modem's allowlist: client networks (CIDR) that need no password",
    usage: ALLOWLIST_USAGE,
    options: { ...configOption, clear: { type: 'boolean' }, wait: { type: 'string' } },
    positionals: [1, 2],
    run: async ({ values, positionals, log }) => {
      const wait = intOption(values['wait'], '--wait', ACCESS_WAIT_SECONDS, 0, 600);
      const out = await withSystem(config(values), oneShot(log), ({ store }) =>
        allowlistCommand(store, positionals, values, `cli:${userInfo().username}`, wait),
      );
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  limits: {
    summary: "show or set a modem's download and upload speed limits (kbit/s, or none)",
    usage: LIMITS_USAGE,
    options: {
      ...configOption,
      download: { type: 'string' },
      upload: { type: 'string' },
      wait: { type: 'string' },
    },
    positionals: 1,
    run: async ({ values, positionals, log }) => {
      const wait = intOption(values['wait'], '--wait', ACCESS_WAIT_SECONDS, 0, 600);
      const out = await withSystem(config(values), oneShot(log), ({ store }) =>
        limitsCommand(store, positionals, values, `cli:${userInfo().username}`, wait),
      );
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  token: {
    summary: 'create, list or revoke scoped API tokens (admin, read-only, reseller)',
    usage: TOKEN_USAGE,
    options: {
      ...configOption,
      scope: { type: 'string' },
      modems: { type: 'string' },
      json: { type: 'boolean' },
    },
    positionals: [1, 2],
    run: async ({ values, positionals, log }) => {
      const out = await withSystem(config(values), oneShot(log), ({ store }) =>
        tokenCommand(store, positionals, values, `cli:${userInfo().username}`),
      );
      process.stdout.write(`${out}\n`);
      return EXIT.ok;
    },
  },
  echo: {
    summary: "serve the echo endpoint: answers GET / with the client's address (dataPlane.egress)",
    usage: `echo [--listen HOST:PORT] (default ${DEFAULT_ECHO_LISTEN.host}:${DEFAULT_ECHO_LISTEN.port})`,
    options: { listen: { type: 'string' } },
    run: async ({ values, log }) => {
      const problems: string[] = [];
      const listen = parseListen(
        stringOption(values['listen']) ?? `${DEFAULT_ECHO_LISTEN.host}:${DEFAULT_ECHO_LISTEN.port}`,
        '--listen',
        problems,
      );
      if (!listen) throw new UsageError('--listen must be HOST:PORT, e.g. 0.0.0.0:8080 or [::]:8080');
      return runEcho(listen, log);
    },
  },
  schedule: {
    summary: "set a modem's rotation schedule, turn it off, or let the farm default apply (--default)",
    usage: SCHEDULE_USAGE,
    options: {
      ...configOption,
      jitter: { type: 'string' },
      off: { type: 'boolean' },
      default: { type: 'boolean' },
    },
    positionals: [1, 2],
    run: async ({ values, positionals, log }) => {
      const { imei, schedule } = parseScheduleArgs(positionals, values);
      const by = `cli:${userInfo().username}`;
      const stored = await withSystem(config(values), oneShot(log), async ({ store }) => {
        if (schedule) return store.setSchedule(imei, schedule, by);
        if (!(await store.modemRecord(imei)))
          throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
        await store.deleteSchedule(imei);
        return null;
      });
      const shown =
        stored &&
        (stored.off
          ? { off: true }
          : { intervalSeconds: stored.intervalSeconds, jitterSeconds: stored.jitterSeconds });
      process.stdout.write(`${JSON.stringify({ imei, schedule: shown })}\n`);
      return EXIT.ok;
    },
  },
  silence: {
    summary: "silence a modem's alerts for a maintenance window (recorded, not pushed), or end it (--off)",
    usage: SILENCE_USAGE,
    options: { ...configOption, until: { type: 'string' }, off: { type: 'boolean' } },
    positionals: 1,
    run: async ({ values, positionals, log }) => {
      const { imei, until } = parseSilenceArgs(positionals, values);
      const by = `cli:${userInfo().username}`;
      const out = await withSystem(config(values), oneShot(log), async ({ store }) => {
        if (until) return store.setSilence(imei, until, by);
        if (!(await store.clearSilence(imei)))
          throw new ModemfleetError('unknown_silence', `modem ${imei} is not silenced`);
        return { imei, until: null };
      });
      process.stdout.write(`${JSON.stringify({ imei, until: out.until })}\n`);
      return EXIT.ok;
    },
  },
  quota: {
    summary: "show or set a modem's byte quota (day, month, total) and expiry; --reset reopens its port",
    usage: QUOTA_USAGE,
    options: {
      ...configOption,
      period: { type: 'string' },
      'month-start': { type: 'string' },
      clear: { type: 'boolean' },
      reset: { type: 'boolean' },
      expires: { type: 'string' },
      'no-expiry': { type: 'boolean' },
    },
    positionals: [1, 2],
    run: async ({ values, positionals, log }) => {
      const request = parseQuotaArgs(positionals, values);
      const out = await withSystem(config(values), oneShot(log), ({ store }) =>
        quotaCommand(store, request, `cli:${userInfo().username}`),
      );
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  backup: {
    summary: 'write the whole database to FILE (gzip, mode 0600); the farm may keep running',
    usage: BACKUP_USAGE,
    options: { ...configOption, force: { type: 'boolean' } },
    positionals: 1,
    run: async ({ values, positionals, log }) => {
      const out = await backupCommand(config(values), positionals[0] ?? '', values['force'] === true, log);
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  restore: {
    summary: "replace the database's contents with a backup (the farm stopped); all or nothing",
    usage: RESTORE_USAGE,
    options: configOption,
    positionals: 1,
    run: async ({ values, positionals, log }) => {
      const out = await restoreCommand(config(values), positionals[0] ?? '', log);
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return EXIT.ok;
    },
  },
  doctor: {
    summary: 'check this host and print a fix for each problem',
    usage: 'doctor [--json] [--config FILE]',
    options: { ...configOption, json: { type: 'boolean' } },
    run: async ({ values, log }) => {
      const findings = await runDoctor(config(values), log);
      process.stdout.write(
        values['json'] ? `${JSON.stringify(findings)}\n` : `${formatFindings(findings)}\n`,
      );
      return findings.some((f) => f.status === 'fail') ? EXIT.failure : EXIT.ok;
    },
  },
};

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    'modemfleet: a supervisor for mobile proxy farms',
    '',
    'usage: modemfleet <command> [options]',
    '',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    "Run 'modemfleet <command> --help' for a command's options.",
    'Environment: DATABASE_URL, MODEMFLEET_STATE_DIR, MODEMFLEET_API_TOKEN, MODEMFLEET_3PROXY, MODEMFLEET_HOST_ID, MODEMFLEET_PG_PORT, MODEMFLEET_LOG_LEVEL',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(`${help()}\n`);
    return name ? EXIT.ok : EXIT.usage;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`modemfleet: unknown command '${name.slice(0, 40)}'\n\n${help()}\n`);
    return EXIT.usage;
  }
  // One-shot commands keep stdout for their output: logs go to stderr.
  const log = createRootLogger({
    fd: 2,
    level: process.env['MODEMFLEET_LOG_LEVEL'] ?? 'warn',
  });
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      options: { ...command.options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
    if (values['help']) {
      process.stdout.write(`usage: modemfleet ${command.usage}\n  ${command.summary}\n`);
      return EXIT.ok;
    }
    const [least, most] =
      typeof command.positionals === 'object'
        ? command.positionals
        : [command.positionals ?? 0, command.positionals ?? 0];
    if (positionals.length < least || positionals.length > most) {
      throw new UsageError(`usage: modemfleet ${command.usage}`);
    }
    return await command.run({ values, positionals, log });
  } catch (err) {
    const e = coerceError(err);
    const isParseError = (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(
      `modemfleet ${name}: ${isParseError || e instanceof ModemfleetError ? e.message : errorChain(e)}\n`,
    );
    if (isParseError) process.stderr.write(`usage: modemfleet ${command.usage}\n`);
    return isParseError ? EXIT.usage : exitCodeFor(e);
  }
}

process.exitCode = await main(process.argv.slice(2));
