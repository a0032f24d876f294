// The TypeScript child: reads NDJSON (or, with `--encoding msgpack`, MessagePack frames) on
// stdin, answers on stdout. Stdout carries protocol
// only; everything else goes to stderr, prefixed `ts-app: `. The protocol itself lives in
// protocol.ts, the framing in framing.ts and the I/O loop in engine.ts (`serveLines`, which
// `serveStdio` uses too); this file parses arguments and picks the engine.

import {
  loadNativeAddon,
  NATIVE_PATH,
  nativeEngine,
  nativeFrameEngine,
  type NativeResponder,
  serveLines,
  tsEngine,
  tsFrameEngine,
} from './engine.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder } from './frame.js';
import { DEFAULT_MAX_LINE_BYTES } from './framing.js';
import { DEFAULT_EXIT_AFTER, DEFAULT_NAME, MAX_SAFE_ID } from './protocol.js';

const USAGE = `\
Usage: node ts-app/dist/main.js [--exit-after N] [--name NAME] [--max-line-bytes N] [--engine ts|native]
                                [--encoding json|msgpack] [--max-frame-bytes N]
  Answer the rust-ts-ipc protocol on stdin/stdout. Exits 0 on stdin EOF, after the exit
  reply, or when stdout's reader is gone; 2 on bad arguments or a missing native addon.
  --exit-after N      end the conversation after N data messages; 0 = never (default ${DEFAULT_EXIT_AFTER})
  --name NAME         who says hello and goodbye (default ${DEFAULT_NAME})
  --max-line-bytes N  longer lines get an error reply and are never buffered (default ${DEFAULT_MAX_LINE_BYTES})
  --engine ts|native  answer with the TypeScript responder (default) or the napi addon
  --encoding json|msgpack  NDJSON lines (default) or MessagePack frames (a 4-byte little-endian
                      length, then one map); both engines answer both
  --max-frame-bytes N longer frames get an error reply and are never buffered (default ${DEFAULT_MAX_FRAME_BYTES})`;

interface Args {
  exitAfter: number;
  name: string;
  maxLineBytes: number;
  maxFrameBytes: number;
  engine: 'ts' | 'native';
  encoding: 'json' | 'msgpack';
}

function log(text: string): void {
  process.stderr.write(`ts-app: ${text}\n`);
}

/** The command line, `'help'`, or the one-line reason it is wrong. */
function parseArgs(argv: readonly string[]): Args | 'help' | { error: string } {
  const args: Args = {
    exitAfter: DEFAULT_EXIT_AFTER,
    name: DEFAULT_NAME,
    maxLineBytes: DEFAULT_MAX_LINE_BYTES,
    maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    engine: 'ts',
    encoding: 'json',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] ?? '';
    if (flag === '-h' || flag === '--help') return 'help';
    const flags = ['--exit-after', '--name', '--max-line-bytes', '--engine', '--encoding', '--max-frame-bytes'];
    if (!flags.includes(flag)) {
      return { error: `unexpected argument \`${flag}\`` };
    }
    const value = argv[++i];
    if (value === undefined) return { error: `${flag} needs a value` };
    switch (flag) {
      case '--name':
        args.name = value;
        break;
      case '--engine':
        if (value !== 'ts' && value !== 'native') return { error: `--engine expects ts or native, got \`${value}\`` };
        args.engine = value;
        break;
      case '--encoding':
        // The same wording as `rust-ts-ipc serve`.
        if (value !== 'json' && value !== 'msgpack') {
          return { error: `--encoding: unknown encoding \`${value}\`; expected json or msgpack` };
        }
        args.encoding = value;
        break;
      default: {
        // The same wording as `rust-ts-ipc serve`.
        if (!/^[0-9]+$/.test(value)) return { error: `${flag} expects a non-negative integer, got \`${value}\`` };
        const n = Number(value);
        if (n > MAX_SAFE_ID) return { error: `${flag} must be at most ${MAX_SAFE_ID}, got \`${value}\`` };
        if (flag === '--exit-after') args.exitAfter = n;
        else if (flag === '--max-frame-bytes') args.maxFrameBytes = n;
        else args.maxLineBytes = n;
      }
    }
  }
  return args;
}

/** The addon's responder for `--engine native`, or undefined after saying on stderr why there is none. */
function nativeResponder(args: Args): NativeResponder | undefined {
  const loaded = loadNativeAddon();
  if ('why' in loaded) {
    const fix = loaded.denied === true ? '' : '; build it with `npm run build -w native`';
    log(`cannot load the native addon from ${NATIVE_PATH}: ${loaded.why}${fix}`);
    return undefined;
  }
  const { exitAfter, name, maxLineBytes, maxFrameBytes } = args;
  try {
    // The demo only, as the TypeScript engine answers: both engines give every input the same bytes.
    return new loaded.addon.Responder({ exitAfter, name, maxLineBytes, maxFrameBytes, services: ['demo'] });
  } catch (e) {
    log(`the native addon refused its options: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  if (args === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if ('error' in args) {
    log(args.error);
    process.stderr.write(`\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  // The loop (engine.ts's `serveLines`, shared with `serveStdio`) owns the pipes; only its
  // failures are ours to report.
  const failed = (e: unknown): void => {
    log(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  };
  const { exitAfter, name, maxLineBytes, maxFrameBytes } = args;
  let native: NativeResponder | undefined;
  if (args.engine === 'native') {
    native = nativeResponder(args);
    if (native === undefined) {
      process.exitCode = 2;
      return;
    }
  }
  if (args.encoding === 'msgpack') {
    const frames =
      native === undefined
        ? tsFrameEngine({ exitAfter, name, maxFrameBytes })
        : nativeFrameEngine(native, maxFrameBytes);
    const decoder = new FrameDecoder({ maxFrameBytes });
    serveLines(frames, { maxLineBytes, decoder }).catch(failed);
    return;
  }
  const lines = native === undefined ? tsEngine({ exitAfter, name, maxLineBytes }) : nativeEngine(native, maxLineBytes);
  serveLines(lines, { maxLineBytes }).catch(failed);
}

main();
