// Renders a Markdown file to HTML twice, through the two paths of the library, and checks that
// they agree: `spawnPeer` (the Rust `rust-ts-ipc serve` as a child, over pipes) and `inProcess()`
// (the same Rust core through the napi addon). Switching paths is one line; the rest is the same.
//
//   node ts-app/dist/examples/markdown.js FILE
//
// Stdout is the HTML only; the timings and any error go to stderr. Exit codes: 0 the outputs
// agree, 1 a request failed or the outputs differ, 2 usage, or something is not built.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { inProcess, type Peer, PeerError, spawnPeer } from 'rust-ts-ipc';

/** The Rust binary `cargo build` makes, found from this file: `<repo>/target/debug/rust-ts-ipc`. */
const SERVE_BIN = fileURLToPath(new URL('../../../target/debug/rust-ts-ipc', import.meta.url));

function fail(code: number, text: string): never {
  process.stderr.write(`markdown: ${text}\n`);
  process.exit(code);
}

/** Renders `text` on `peer` and closes it; the HTML and how long the request took. */
async function render(peer: Peer, text: string): Promise<{ html: string; ms: number }> {
  try {
    const started = performance.now();
    const reply = await peer.request('markdown', text);
    const ms = performance.now() - started;
    if (typeof reply.data !== 'string') throw new Error(`expected HTML text, got ${JSON.stringify(reply.data)}`);
    return { html: reply.data, ms };
  } finally {
    await peer.close();
  }
}

async function main(): Promise<void> {
  const file = process.argv[2];
  if (file === undefined || process.argv.length > 3) fail(2, 'usage: node ts-app/dist/examples/markdown.js FILE');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    fail(2, `cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!existsSync(SERVE_BIN)) fail(2, `${SERVE_BIN} is not built; run \`cargo build\` (or \`npm run build\`) first`);

  const piped = await render(spawnPeer(SERVE_BIN, ['serve']), text);
  let local: Peer;
  try {
    local = inProcess();
  } catch (e) {
    fail(2, e instanceof Error ? e.message : String(e));
  }
  const inproc = await render(local, text);

  process.stderr.write(
    `markdown: ${Buffer.byteLength(text)} bytes of Markdown; ` +
      `pipe (spawnPeer, rust-ts-ipc serve) ${piped.ms.toFixed(3)} ms, in-process (inProcess) ${inproc.ms.toFixed(3)} ms per request\n`,
  );
  if (piped.html !== inproc.html) {
    fail(1, `the two paths disagree: the pipe gave ${piped.html.length} characters, in-process ${inproc.html.length}`);
  }
  process.stdout.write(piped.html);
}

main().catch((e: unknown) => {
  const hint =
    e instanceof PeerError && e.code === 'ERROR_REPLY' && /unknown msg_type/.test(e.message)
      ? ' (a build from before the markdown service: run `npm run build`)'
      : '';
  fail(1, `${e instanceof Error ? e.message : String(e)}${hint}`);
});
