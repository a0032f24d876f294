// The restart policy (peer/restart.ts) on its own: the backoff, the jitter, the circuit, and
// the checks of the `restart` option. Times are plain numbers and the jitter's randomness is a
// function the test gives, so every expected value is exact.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { PeerError } from '../index.js';
import { backoffMs, DEFAULT_RESTART, type Gate, restartPolicy, Restarts } from '../peer/restart.js';

const policy = (maxRestarts: number, windowMs = 1000) => restartPolicy({ baseMs: 100, capMs: 1000, maxRestarts, windowMs }, 'restart');

/** Randomness that always returns `r`: 0 gives the shortest delay (d/2), just under 1 the longest. */
const fixed = (r: number) => () => r;

function restarts(maxRestarts: number, windowMs = 1000, random = fixed(0)): Restarts {
  const p = policy(maxRestarts, windowMs);
  assert.ok(p !== undefined);
  return new Restarts(p, random);
}

describe('restart policy', () => {
  test('the backoff doubles from baseMs and stops at capMs', () => {
    const p = policy(5);
    assert.ok(p !== undefined);
    assert.deepEqual([0, 1, 2, 3, 4, 5, 40].map((k) => backoffMs(p, k)), [100, 200, 400, 800, 1000, 1000, 1000]);
  });

  test('is running until the child dies, then backs off, then says start', () => {
    const r = restarts(5);
    assert.deepEqual(r.poll(0), { state: 'running' });
    assert.deepEqual(r.onExit(10), { state: 'backoff', until: 60 });
    assert.equal(r.delayMs, 50);
    assert.deepEqual(r.poll(59.9), { state: 'backoff', until: 60 });
    assert.deepEqual(r.poll(60), { state: 'start' });
    r.started(60);
    assert.deepEqual(r.poll(61), { state: 'running' });
    assert.equal(r.restartsInWindow(61), 1);
  });

  test('each restart within the window doubles the jittered backoff', () => {
    const r = restarts(10, 100_000);
    const delays: number[] = [];
    let now = 0;
    for (let i = 0; i < 5; i++) {
      const gate = r.onExit(now) as Extract<Gate, { state: 'backoff' }>;
      delays.push(gate.until - now);
      now = gate.until;
      r.started(now);
    }
    // d/2 with randomness 0: 100/2, 200/2, 400/2, 800/2, then the cap 1000/2.
    assert.deepEqual(delays, [50, 100, 200, 400, 500]);
  });

  test('jitter is uniform within [d/2, d]', () => {
    for (const [random, expected] of [
      [0, 50],
      [0.5, 75],
      [0.999, 99.95],
    ] as const) {
      const r = restarts(5, 1000, fixed(random));
      r.onExit(0);
      assert.ok(Math.abs(r.delayMs - expected) < 1e-9, `random ${random}: ${r.delayMs}`);
    }
    // With the real randomness, every delay lies within the bounds.
    const p = policy(5);
    assert.ok(p !== undefined);
    const real = new Restarts(p);
    for (let i = 0; i < 1000; i++) {
      real.onExit(0);
      assert.ok(real.delayMs >= 50 && real.delayMs <= 100, String(real.delayMs));
    }
  });

  test('one restart more than maxRestarts within the window opens the circuit until the oldest leaves', () => {
    const r = restarts(2, 1000);
    r.onExit(0);
    r.started(50);
    r.onExit(100);
    r.started(300);
    // A third restart within 1000 ms of the first (at 50) would be one too many.
    assert.deepEqual(r.onExit(400), { state: 'open', until: 1050 });
    assert.equal(r.delayMs, 650, 'the time it stays open, from the exit');
    assert.deepEqual(r.poll(1049), { state: 'open', until: 1050 });
    assert.equal(r.restartsInWindow(1049), 2);
    assert.deepEqual(r.poll(1050), { state: 'start' });
    r.started(1050);
    assert.equal(r.restartsInWindow(1050), 2, 'the one at 50 left the window, the one at 1050 came in');
    // Dying again at once: the one at 300 is still in the window.
    assert.deepEqual(r.onExit(1060), { state: 'open', until: 1300 });
  });

  test('a quiet window sets the backoff back to baseMs', () => {
    const r = restarts(5, 1000);
    r.onExit(0);
    r.started(50);
    r.onExit(60);
    assert.equal(r.delayMs, 100, 'second restart within the window: 200/2');
    r.started(160);
    r.onExit(5000);
    assert.equal(r.delayMs, 50, 'the window is empty again: 100/2');
  });

  test('maxRestarts 0 never restarts within a window', () => {
    const r = restarts(0, 1000);
    assert.deepEqual(r.onExit(10), { state: 'open', until: 1010 });
    assert.deepEqual(r.poll(1010), { state: 'start' });
  });

  test('a start that failed, reported again, decides afresh without growing the backoff', () => {
    const r = restarts(5, 1000);
    r.onExit(0);
    assert.equal(r.delayMs, 50);
    // No `started` in between: the count in the window is still 0.
    assert.deepEqual(r.onExit(80), { state: 'backoff', until: 130 });
  });

  test('an infinite window never forgets: the circuit, once open, stays open', () => {
    const r = restarts(1, Infinity);
    r.onExit(0);
    r.started(50);
    assert.deepEqual(r.onExit(1e9), { state: 'open', until: Infinity });
  });

  test('the option: off, the defaults, and fields filled in', () => {
    assert.equal(restartPolicy(undefined, 'restart'), undefined);
    assert.equal(restartPolicy(false, 'restart'), undefined);
    assert.deepEqual(restartPolicy(true, 'restart'), { baseMs: 100, capMs: 5000, maxRestarts: 5, windowMs: 60_000 });
    assert.deepEqual(DEFAULT_RESTART, { baseMs: 100, capMs: 5000, maxRestarts: 5, windowMs: 60_000 });
    assert.deepEqual(restartPolicy({ maxRestarts: 2 }, 'restart'), { baseMs: 100, capMs: 5000, maxRestarts: 2, windowMs: 60_000 });
    assert.deepEqual(restartPolicy({ baseMs: 8000 }, 'restart'), { baseMs: 8000, capMs: 8000, maxRestarts: 5, windowMs: 60_000 });
  });

  test('the option: a bad field is named with its value', () => {
    const cases: [unknown, string][] = [
      ['yes', 'restart must be true, false or an object { baseMs, capMs, maxRestarts, windowMs }, got "yes"'],
      [null, 'restart must be true, false or an object { baseMs, capMs, maxRestarts, windowMs }, got null'],
      [[1], 'restart must be true, false or an object { baseMs, capMs, maxRestarts, windowMs }, got an array'],
      [{ baseMs: 0 }, 'restart.baseMs must be a number of milliseconds from 1 to 2147483647, got 0'],
      [{ baseMs: Number.NaN }, 'restart.baseMs must be a number of milliseconds from 1 to 2147483647, got NaN'],
      [{ baseMs: 200, capMs: 100 }, 'restart.capMs must be a number of milliseconds from 200 to 2147483647, got 100'],
      [{ capMs: 2 ** 31 }, 'restart.capMs must be a number of milliseconds from 100 to 2147483647, got 2147483648'],
      [{ windowMs: 0 }, 'restart.windowMs must be a number of milliseconds from 1 to Infinity, got 0'],
      [{ maxRestarts: 1.5 }, 'restart.maxRestarts must be an integer of at least 0, got 1.5'],
      [{ maxRestarts: -1 }, 'restart.maxRestarts must be an integer of at least 0, got -1'],
      [{ maxRestarts: '3' }, 'restart.maxRestarts must be an integer of at least 0, got "3"'],
    ];
    for (const [value, message] of cases) {
      assert.throws(
        () => restartPolicy(value, 'restart'),
        (e: unknown) => e instanceof PeerError && e.code === 'INVALID_ARGUMENT' && e.message === message,
        message,
      );
    }
  });
});
