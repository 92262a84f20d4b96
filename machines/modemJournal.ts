/**
 * The journal rule: which of the modem machine's states are lifecycle (journaled) and which are
 * activity (not journaled; their results go to health rows or nowhere).
 *
 * Lifecycle is every state an operator would want on a modem's timeline: detecting,
 * initializing (identity, SIM, registering, connecting), online (serving, rotating and its steps),
 * disabling/disabled/enabling, resetting, recovering (each rung), error and removed. Activity is a
 * poll loop inside one of them, a pair of states that the machine alternates between while nothing
 * changes: the signal poll (`online.serving ↔ online.polling`), the probe retry
 * (`detecting.probing ↔ detecting.waiting`), the SIM retry (`initializing.sim ↔ simWaiting`) and
 * the registration poll (`….registering.query ↔ ….registering.waiting`). Each loop is journaled as
 * one state, under the name below; a transition is journaled only when that name changes.
 *
 * So an idle online modem journals nothing (the signal poll writes health rows), and a modem
 * searching for a network journals its entry into `registering` once, not every poll.
 */
const LOOPS: readonly (readonly [RegExp, string])[] = [
  [/^online\.(?:serving|polling)$/, 'online.serving'],
  [/^detecting\.(?:probing|waiting)$/, 'detecting.probing'],
  [/^initializing\.(?:sim|simWaiting)$/, 'initializing.sim'],
  [/^(initializing|online\.rotating)\.registering\.(?:query|waiting)$/, '$1.registering'],
];

/** The journaled name of a state (`stateName` form, e.g. `online.polling` → `online.serving`). */
export function journaledState(state: string): string {
  for (const [pattern, name] of LOOPS) if (pattern.test(state)) return state.replace(pattern, name);
  return state;
}

/**
 * Given the journaled state so far (null: nothing journaled yet by this actor) and the state the
 * machine moved to, the state to journal, or null when the move stays inside a poll loop.
 */
export function journalStep(previous: string | null, next: string): string | null {
  const name = journaledState(next);
  return name === previous ? null : name;
}
