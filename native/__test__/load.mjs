// Loads the built addon the way the rest of the repository does (`require('./native')`), and the
// shared conformance vectors. Build first: `npm run build:debug -w native` (or `build`).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

export const repoRoot = new URL('../../', import.meta.url);

/** The addon, loaded through its package (`native/package.json` → the generated `index.js`). */
export const native = load();

function load() {
  try {
    return createRequire(new URL('package.json', repoRoot))('./native');
  } catch (error) {
    const first = String(error?.message).split('\n')[0];
    throw new Error(`the addon is not built; run \`npm run build -w native\` first (${first})`, { cause: error });
  }
}

/** Every case of `tests/conformance.json`. */
export const cases = JSON.parse(readFileSync(new URL('tests/conformance.json', repoRoot), 'utf8')).cases;

/**
 * A case's `options` (wire names) and `services` as `new Responder(...)` takes them. A case
 * without `services` is the demo's alone (the addon's own default is both).
 */
export function optionsOf(c) {
  const o = c.options ?? {};
  return { exitAfter: o.exit_after, name: o.name, maxLineBytes: o.max_line_bytes, services: c.services ?? ['demo'] };
}

/** An input element as the bytes of one physical line (without its `\n`). */
export function lineBytes(element) {
  return typeof element === 'string' ? Buffer.from(element, 'utf8') : Buffer.from(element.base64, 'base64');
}

/** What the responder writes for a case: every reply line, each ending in `\n`. */
export function expectedText(c) {
  return c.replies.map((line) => `${line}\n`).join('');
}
