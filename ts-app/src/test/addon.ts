// Suites that need the native addon. Without it they skip, saying why, so the TypeScript side
// can be tested alone; with RUST_TS_IPC_REQUIRE_NATIVE set (`npm test` at the repository root
// sets it, as it sets RUST_TS_IPC_REQUIRE_NODE for the Rust tests) a missing addon fails instead.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { loadNativeAddon, type NativeAddon } from '../engine.js';

/** The environment variable that turns "addon not loadable" from a skip into a failure. */
export const REQUIRE_NATIVE = 'RUST_TS_IPC_REQUIRE_NATIVE';

/** The addon at `<repo>/native`, or why it cannot be loaded. */
export const loaded = loadNativeAddon();

/**
 * `describe(name, body)` with the loaded addon; if it did not load, a skipped suite, or under
 * RUST_TS_IPC_REQUIRE_NATIVE one whose single test fails with the reason.
 */
export function describeWithAddon(name: string, body: (addon: NativeAddon) => void): void {
  if ('addon' in loaded) {
    const { addon } = loaded;
    describe(name, () => body(addon));
    return;
  }
  const why = `addon not loadable: ${loaded.why}`;
  if (process.env[REQUIRE_NATIVE] === undefined) {
    describe(name, { skip: why }, () => {});
  } else {
    describe(name, () => {
      test('the native addon loads', () => assert.fail(`${why} (${REQUIRE_NATIVE} is set)`));
    });
  }
}
