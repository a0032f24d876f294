// The restart policy of a supervised child (`spawnPeer`'s `restart` option), as plain data:
// no process, timer or clock of its own. The caller says when the child died and when a fresh
// one started (times it read from its clock) and asks whether one may start now; the only
// randomness, the jitter, comes from a function it is given. The same semantics as the Rust
// `rust_ts_ipc::supervise::Restarts`, in the vocabulary of Erlang/OTP supervisors:
// - each unexpected exit schedules the next start after a backoff `d = min(capMs, baseMs × 2^k)`,
//   `k` being how many restarts started within the last `windowMs`, with equal jitter: a delay
//   drawn uniformly from `[d/2, d]` (never zero, so a child that dies at once cannot spin; spread,
//   so hosts restarting together do not stampede). Once the window holds no restart the backoff
//   is back to `baseMs`;
// - the circuit: a restart that would be the `maxRestarts + 1`-th within `windowMs` is refused;
//   the circuit stays open until the oldest restart counted leaves the window (restarting then
//   keeps the rate at `maxRestarts` per `windowMs`). `maxRestarts: 0` never restarts: the first
//   crash opens the circuit for one `windowMs`.

import { PeerError, PeerErrorCode } from './errors.js';

/**
 * `spawnPeer`'s `restart` option as an object: how a child that died unexpectedly is replaced.
 * Every field is optional; `restart: true` takes all the defaults (`DEFAULT_RESTART`).
 */
export interface RestartOptions {
  /** The backoff before the first restart within a window, before jitter, in ms (at least 1). Default 100. */
  baseMs?: number;
  /** The longest backoff, before jitter, in ms (at least `baseMs`, at most 2^31 − 1). Default 5 000. */
  capMs?: number;
  /** The most restarts within `windowMs`; one more opens the circuit (`RESTART_LIMIT`). An integer ≥ 0. Default 5. */
  maxRestarts?: number;
  /** The period over which restarts are counted, in ms (at least 1; Infinity: restarts are never forgotten). Default 60 000. */
  windowMs?: number;
}

/** A complete restart policy: `RestartOptions` with every field set. */
export type RestartPolicy = Readonly<Required<RestartOptions>>;

/** The defaults of `restart: true`: 100 ms doubling up to 5 s, at most 5 restarts a minute. */
export const DEFAULT_RESTART: RestartPolicy = Object.freeze({ baseMs: 100, capMs: 5000, maxRestarts: 5, windowMs: 60_000 });

/** setTimeout's limit: a longer backoff would fire at once. */
const MAX_TIMER_MS = 0x7fffffff;

/** A value as an error message shows it: strings quoted (`"3"`, not `3`), arrays named. */
function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'an array';
  return String(value);
}

function invalid(name: string, what: string, value: unknown): PeerError {
  return new PeerError(PeerErrorCode.INVALID_ARGUMENT, `${name} must be ${what}, got ${shown(value)}`);
}

/**
 * Checks a `restart` option and fills in the defaults: undefined or false is off (undefined
 * returned), true the defaults, an object the defaults for what it leaves out. Throws
 * `INVALID_ARGUMENT` naming the field and its value.
 */
export function restartPolicy(value: unknown, name: string): RestartPolicy | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return DEFAULT_RESTART;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(name, 'true, false or an object { baseMs, capMs, maxRestarts, windowMs }', value);
  }
  const o = value as RestartOptions;
  const ms = (field: keyof RestartOptions, min: number, max: number): number => {
    const v: unknown = o[field];
    if (v === undefined) return DEFAULT_RESTART[field];
    if (typeof v !== 'number' || Number.isNaN(v) || v < min || v > max) {
      throw invalid(`${name}.${field}`, `a number of milliseconds from ${min} to ${max === Infinity ? 'Infinity' : max}`, v);
    }
    return v;
  };
  const baseMs = ms('baseMs', 1, MAX_TIMER_MS);
  const capMs = o.capMs === undefined ? Math.max(DEFAULT_RESTART.capMs, baseMs) : ms('capMs', baseMs, MAX_TIMER_MS);
  const windowMs = ms('windowMs', 1, Infinity);
  const maxRestarts: unknown = o.maxRestarts ?? DEFAULT_RESTART.maxRestarts;
  if (typeof maxRestarts !== 'number' || !Number.isSafeInteger(maxRestarts) || maxRestarts < 0) {
    throw invalid(`${name}.maxRestarts`, 'an integer of at least 0', maxRestarts);
  }
  return Object.freeze({ baseMs, capMs, maxRestarts, windowMs });
}

/** The backoff before jitter after `k` restarts within the window: `min(capMs, baseMs × 2^k)`. */
export function backoffMs(policy: RestartPolicy, k: number): number {
  return Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(k, 31));
}

/** Whether a fresh child may start, from `Restarts.poll` (and what `Restarts.onExit` decided). */
export type Gate =
  /** The child is running (or has not died since it last started): nothing to do. */
  | { readonly state: 'running' }
  /** Start a fresh child now, then call `started`. */
  | { readonly state: 'start' }
  /** In the backoff after a crash: start a fresh child at `until`, not before. */
  | { readonly state: 'backoff'; readonly until: number }
  /** The circuit is open (more than `maxRestarts` within `windowMs`): no child starts before `until`. */
  | { readonly state: 'open'; readonly until: number };

const RUNNING: Gate = Object.freeze({ state: 'running' });
const START: Gate = Object.freeze({ state: 'start' });

/**
 * The restart state of one supervised child. Times are milliseconds on the caller's clock
 * (`performance.now()` in the peer); `random` gives numbers in [0, 1) for the jitter.
 */
export class Restarts {
  readonly policy: RestartPolicy;
  readonly #random: () => number;
  /** When each restart within the window started, oldest first. */
  #history: number[] = [];
  /** Set by a crash, cleared by `started`. */
  #down: { readonly open: boolean; readonly until: number } | undefined;
  #delayMs = 0;

  constructor(policy: RestartPolicy, random: () => number = Math.random) {
    this.policy = policy;
    this.#random = random;
  }

  /** Restarts that started within the window ending at `now`. */
  restartsInWindow(now: number): number {
    this.#forgetBefore(now);
    return this.#history.length;
  }

  /** How long after the last `onExit` a child may start: the backoff drawn (jitter included), or the time the circuit stays open, in ms. */
  get delayMs(): number {
    return this.#delayMs;
  }

  /**
   * The child died unexpectedly at `now`: when may the next one start? `backoff` or `open`.
   * Called again before `started` (a start that failed), it decides afresh from `now`, the
   * backoff growing only with restarts that did start.
   */
  onExit(now: number): Gate {
    this.#forgetBefore(now);
    const count = this.#history.length;
    const max = this.policy.maxRestarts;
    if (count >= max) {
      // Refused: the oldest counted restart must leave the window first (with maxRestarts 0
      // there is none: one window from now).
      const from = max === 0 ? now : (this.#history[count - max] ?? now);
      this.#down = { open: true, until: from + this.policy.windowMs };
      this.#delayMs = this.#down.until - now;
    } else {
      const d = backoffMs(this.policy, count);
      this.#delayMs = d / 2 + this.#random() * (d / 2);
      this.#down = { open: false, until: now + this.#delayMs };
    }
    return this.poll(now);
  }

  /** Whether a fresh child may start at `now`. */
  poll(now: number): Gate {
    const down = this.#down;
    if (down === undefined) return RUNNING;
    if (now >= down.until) return START;
    return { state: down.open ? 'open' : 'backoff', until: down.until };
  }

  /** A fresh child started at `now` (after `start`): counted in the window. */
  started(now: number): void {
    this.#down = undefined;
    this.#history.push(now);
    this.#forgetBefore(now);
  }

  #forgetBefore(now: number): void {
    const window = this.policy.windowMs;
    let drop = 0;
    while (drop < this.#history.length && now - (this.#history[drop] as number) >= window) drop++;
    if (drop > 0) this.#history.splice(0, drop);
  }
}
