import { createActor, fromPromise, SimulatedClock, type Actor } from 'xstate';
import { coerceError } from '../../src/util/errors.js';
import { modemMachine } from '../../machines/modemMachine.js';
import type {
  AlertInfo,
  ModemIdentity,
  CommandResult,
  ModemConfig,
  RegistrationStat,
  SignalSample,
  SimState,
} from '../../machines/modemTypes.js';

/** A modem world for pure machine tests: effects answer from these knobs, time is simulated. */
export class FakeModem {
  answers = true;
  sim: SimState = 'ready';
  registration: RegistrationStat = 'home';
  dataCall = true;
  /** `AT$QCRMCALL=1,1` is answered but no call comes up (`no_data_call`). */
  callStarts = true;
  /** The host's call is still up at the periodic check. */
  callUp = true;
  /** `AT+QCFG="usbnet"`: anything but 0 is `usbnet_mode`. */
  usbnet = 0;
  /** The link's raw_ip can be set (else `raw_ip_off`). */
  rawIp = true;
  sameAddress = false;
  private n = 1;
  address = '10.0.0.1';
  calls: string[] = [];

  private step<T>(name: string, value: () => T): Promise<T> {
    this.calls.push(name);
    if (!this.answers)
      return Promise.reject(Object.assign(new Error(`${name}: no answer`), { code: 'at_timeout' }));
    try {
      return Promise.resolve(value());
    } catch (err) {
      return Promise.reject(coerceError(err));
    }
  }

  private coded(message: string, code: string): Error {
    return Object.assign(new Error(message), { code });
  }

  private dial(name: 'connect' | 'redial'): Promise<{ address: string }> {
    return this.step(name, () => {
      if (!this.rawIp) throw this.coded('wwan0: raw_ip stays N', 'raw_ip_off');
      if (!this.dataCall) throw this.coded('AT$QCRMCALL=1,1 answered ERROR', 'data_call_failed');
      if (!this.callStarts) throw this.coded('no call is up', 'no_data_call');
      if (!this.sameAddress) this.address = `10.0.0.${++this.n}`;
      this.callUp = true;
      return { address: this.address };
    });
  }

  actors() {
    return {
      probe: fromPromise(() => this.step<void>('probe', () => undefined)),
      readIdentity: fromPromise<ModemIdentity>(() =>
        this.step('readIdentity', () => {
          return {
            imei: '866834040000017',
            manufacturer: 'Quectel',
            model: 'EC25',
            firmware: 'X',
            iccid: null,
            imsi: null,
            usbnet: this.usbnet,
          };
        }),
      ),
      checkSim: fromPromise<SimState>(() => this.step('checkSim', () => this.sim)),
      queryRegistration: fromPromise<{ stat: RegistrationStat; operator: string | null }>(() =>
        this.step('queryRegistration', () => ({ stat: this.registration, operator: 'Vodafone' })),
      ),
      connect: fromPromise<{ address: string }>(() => this.dial('connect')),
      redial: fromPromise<{ address: string }>(() => this.dial('redial')),
      pollSignal: fromPromise(() =>
        this.step('pollSignal', (): { signal: SignalSample; callUp: boolean } => ({
          signal: { technology: 'LTE', rssi: -70, rsrp: -100, sinr: 150, sinrDb: 10, rsrq: -9 },
          callUp: this.callUp,
        })),
      ),
      detach: fromPromise(() => this.step<void>('detach', () => undefined)),
      attach: fromPromise(() => this.step<void>('attach', () => undefined)),
      softReset: fromPromise(() => this.step<void>('softReset', () => undefined)),
      hardReset: fromPromise(() => this.step<void>('hardReset', () => undefined)),
      usbReset: fromPromise(() => this.step<void>('usbReset', () => undefined)),
      powerCycle: fromPromise(() => this.step<void>('powerCycle', () => undefined)),
      disableRadio: fromPromise(() => this.step<void>('disableRadio', () => undefined)),
    };
  }
}

export const FAST_CONFIG: Partial<ModemConfig> = {
  probeAttempts: 3,
  probeRetryMs: 100,
  simRetries: 2,
  simRetryMs: 100,
  registrationPollMs: 100,
  registrationTimeoutMs: 1_000,
  signalPollMs: 1_000,
  detachMs: 500,
  rotationAttempts: 3,
  backoffBaseMs: 100,
  backoffCapMs: 800,
  reenumerationMs: 2_000,
  maxRecoveries: 5,
  recoveryWindowMs: 60_000,
};

export interface Harness {
  actor: Actor<typeof modemMachine>;
  clock: SimulatedClock;
  world: FakeModem;
  results: CommandResult[];
  alerts: AlertInfo[];
  health: SignalSample[];
  states: string[];
  /** Advance simulated time in steps, letting promises settle in between. */
  advance(ms: number, step?: number): Promise<void>;
  state(): string;
}

export const stateString = (value: unknown): string =>
  typeof value === 'string'
    ? value
    : Object.entries(value as Record<string, unknown>)
        .map(([k, v]) => `${k}.${stateString(v)}`)
        .join(',');

export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

export function harness(
  config: Partial<ModemConfig> = FAST_CONFIG,
  world = new FakeModem(),
  desired: 'enabled' | 'disabled' = 'enabled',
): Harness {
  const clock = new SimulatedClock();
  const results: CommandResult[] = [];
  const alerts: AlertInfo[] = [];
  const health: SignalSample[] = [];
  const machine = modemMachine.provide({
    actors: world.actors(),
    actions: {
      commandFinished: (_, params) => {
        if (params) results.push(params);
      },
      raiseAlert: (_, params) => void alerts.push(params),
      reportHealth: (_, params) => void health.push(params.signal),
    },
  });
  const actor = createActor(machine, {
    clock,
    input: { usbPath: '1-1.2', config, now: () => clock.now(), desired },
  });
  const states: string[] = [];
  actor.subscribe((s) => {
    const v = stateString(s.value);
    if (states.at(-1) !== v) states.push(v);
  });
  actor.start();
  return {
    actor,
    clock,
    world,
    results,
    alerts,
    health,
    states,
    state: () => stateString(actor.getSnapshot().value),
    async advance(ms: number, step = 50) {
      await settle();
      for (let t = 0; t < ms; t += step) {
        clock.increment(step);
        await settle();
      }
    },
  };
}
