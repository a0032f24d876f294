// What answers the frames main.ts reads: the TypeScript responder, or the napi addon (the Rust
// core in-process). Pure apart from loading the addon, so both are testable without a pipe.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import type { Frame } from './framing.js';
import { type Message, Responder, type ResponderOptions, tooLongReply } from './protocol.js';

/** Answers the decoder's frames in order; the host stops reading once `done`. */
export interface Engine {
  /** The reply lines for one frame, each ending in `\n` (empty for none). */
  answer(frame: Frame): string | Uint8Array;
  /** True once the conversation has ended (the `exit` reply has been produced). */
  readonly done: boolean;
}

/** The TypeScript responder: frames go straight to `handleFrame`. */
export function tsEngine(options: Required<ResponderOptions>): Engine {
  const responder = new Responder(options);
  return {
    answer: (frame) => responder.handleFrame(frame),
    get done() {
      return responder.done;
    },
  };
}

/** The part of the addon's `Responder` the native engine uses. */
export interface NativeResponder {
  handleBuffer(bytes: Uint8Array): string | Uint8Array;
  handle(msg: Message): Message[];
  readonly done: boolean;
}

/** `new Responder(options)` of the addon: the TypeScript options plus the services answered. */
export interface NativeResponderOptions extends ResponderOptions {
  /** The addon answers `demo` and `markdown` by default; the TypeScript responder, `demo` only. */
  services?: ('demo' | 'markdown')[];
}

/** The part of the addon's exports the native engine uses. */
export interface NativeAddon {
  Responder: new (options?: NativeResponderOptions) => NativeResponder;
}

/**
 * What the addon's Rust → JS calls take: a function from one NDJSON line (without its line
 * ending) to the reply lines, or an object with such a `handleLine` method (a `Responder`).
 */
export type JsResponder = ((line: string) => string) | { handleLine(line: string): string };

/** The addon's Rust → JS exports (documented in `native/index.d.ts`). */
export interface CallsJs {
  playDemo(responder: JsResponder): string[];
  playDemoOnThread(responder: JsResponder): Promise<string[]>;
  callJsSync(responder: JsResponder, line: string, count: number): number;
  callJsThread(responder: JsResponder, line: string, count: number, window: number): Promise<number>;
}

/** The addon's Rust → JS exports, if this build of it has them. */
export function callsJs(addon: NativeAddon): CallsJs | undefined {
  const exports = addon as Partial<CallsJs>;
  return typeof exports.playDemo === 'function' && typeof exports.playDemoOnThread === 'function'
    ? (addon as NativeAddon & CallsJs)
    : undefined;
}

const NO_BYTES = new Uint8Array(0);

/**
 * The addon's responder behind the TypeScript decoder. The addon has no `handleFrame`: it
 * numbers error replies by counting its calls, one line each, while the decoder skips blank
 * lines and drops over-long ones. So before each frame it is given one empty line per line
 * the decoder skipped (blank lines get no reply there either), and an over-long line is
 * counted with one more empty line and answered with the same reply text, encoded in
 * TypeScript. Its counter then always equals the physical line number.
 */
export function nativeEngine(responder: NativeResponder, maxLineBytes: number): Engine {
  let fed = 0;
  return {
    answer(frame) {
      while (fed < frame.line - 1) {
        responder.handleBuffer(NO_BYTES);
        fed++;
      }
      fed++;
      if (frame.kind === 'line') return responder.handleBuffer(frame.bytes);
      responder.handleBuffer(NO_BYTES);
      return tooLongReply(frame.line, frame.length, maxLineBytes);
    },
    get done() {
      return responder.done;
    },
  };
}

/** Where the addon package lives: `<repo>/native`, two levels above `dist/engine.js`. */
export const NATIVE_PATH = fileURLToPath(new URL('../../native', import.meta.url));

/**
 * Loads the addon package at `path` (default `<repo>/native`), or says why it cannot. Lazy:
 * only `--engine native` calls it, so the TypeScript build and child never need the addon.
 */
export function loadNativeAddon(path: string = NATIVE_PATH): { addon: NativeAddon } | { why: string } {
  try {
    const loaded: unknown = createRequire(import.meta.url)(path);
    const responder = (loaded as Partial<NativeAddon> | null)?.Responder;
    if (typeof responder !== 'function') return { why: 'it does not export a Responder class' };
    return { addon: loaded as NativeAddon };
  } catch (e) {
    const text = e instanceof Error ? e.message : String(e);
    return { why: text.split('\n')[0] ?? text };
  }
}
