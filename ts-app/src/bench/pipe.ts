// Pipe scenarios with a Node parent: 4 (Node → Rust `serve`), 5 (Node → the TypeScript child)
// and the floor every Node-parent pipe path is compared with, Node → `cat`.
//
// The parent does the same minimal work on every path so that differences are the child's:
// requests are precomputed text (prefix + id), replies are framed by '\n', matched by `id`
// and compared byte for byte with the reply expected for that id. A real client's
// JSON.stringify/JSON.parse is measured separately (cost.js-*) and added in the report.

import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';

import {
  ackPrefix,
  type Ctx,
  interleavedAt,
  MAX_IN_FLIGHT_BYTES,
  PAYLOADS,
  payload,
  requestPrefix,
  vmHwmKib,
  WINDOWS,
} from './common.js';
import { type RunOut, timeWindowed, windowedRecord } from './measure.js';
import type { RssRecord, TimingRecord } from './schema.js';

/** A correct reply is the responder's ack, or the request itself from a raw echo. */
export type Expect = 'ack' | 'echo';

/** One Node-parent pipe path: what to spawn and what its replies look like. */
export interface PipePath {
  path: string;
  scenario: string;
  label: string;
  command: string;
  args: string[];
  expect: Expect;
  rssPath: string;
  rssLabel: string;
}

/**
 * A raw bench child, spawned once and reused for every payload and window of one path: the
 * first failure (its exit, a spawn error, a write error) is kept and handed to the run waiting
 * for it. Subclasses frame what it writes (`data`) and run the timed exchanges.
 */
export abstract class BenchChild {
  readonly child: ChildProcessByStdio<Writable, Readable, null>;
  protected failure: Error | null = null;
  protected onFailure: ((e: Error) => void) | null = null;
  protected nextId = 1;
  readonly exited: Promise<number | null>;

  /** `expecting` names what the child still owed when it exited (`replies`, `frames`). */
  constructor(readonly shown: string, command: string, args: string[], expecting: string) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code) => {
        this.fail(new Error(`\`${shown}\` exited (code ${code}) while ${expecting} were still expected`));
        resolve(code);
      });
    });
    this.child.on('error', (e) => this.fail(new Error(`cannot run \`${shown}\`: ${e.message}`)));
    this.child.stdin.on('error', (e) => this.fail(new Error(`writing to \`${shown}\`: ${e.message}`)));
    this.child.stdout.on('data', (chunk: Buffer) => this.data(chunk));
  }

  protected fail(e: Error): void {
    if (this.failure !== null) return;
    this.failure = e;
    this.onFailure?.(e);
  }

  /** Takes one chunk of the child's stdout. */
  protected abstract data(chunk: Buffer): void;

  /** Closes stdin and waits (2 s at most, then kills) for the child to exit. */
  async close(): Promise<void> {
    this.onFailure = null;
    this.failure = this.failure ?? new Error('closed');
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** A child with its pipes, reused for every payload and window of one path. */
export class Peer extends BenchChild {
  private pending: Buffer[] = [];
  private onLines: ((lines: Buffer[], now: number) => void) | null = null;

  constructor(shown: string, command: string, args: string[]) {
    super(shown, command, args, 'replies');
  }

  /** Frames a chunk into complete lines (without '\n') and hands them over in one call. */
  protected data(chunk: Buffer): void {
    const now = performance.now();
    let start = 0;
    let nl = chunk.indexOf(10, start);
    if (nl === -1) {
      this.pending.push(chunk);
      return;
    }
    const lines: Buffer[] = [];
    while (nl !== -1) {
      if (this.pending.length > 0) {
        this.pending.push(chunk.subarray(start, nl));
        lines.push(Buffer.concat(this.pending));
        this.pending = [];
      } else {
        lines.push(chunk.subarray(start, nl));
      }
      start = nl + 1;
      nl = chunk.indexOf(10, start);
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
    if (this.onLines !== null) this.onLines(lines, now);
    else this.fail(new Error(`\`${this.shown}\` wrote when no reply was expected: ${excerpt(lines[0])}`));
  }

  /** Sends `count` data messages, `window` in flight, checking every reply. */
  run(data: string, window: number, count: number, expect: Expect): Promise<RunOut> {
    const reqPrefix = requestPrefix(data);
    const repPrefix = Buffer.from(expect === 'ack' ? ackPrefix(data) : reqPrefix);
    const base = this.nextId;
    this.nextId += count;
    const sent = new Float64Array(count);
    const latencies = new Float64Array(count).fill(NaN);
    let next = 0;
    let received = 0;
    const t0 = performance.now();
    return new Promise<RunOut>((resolve, reject) => {
      if (this.failure !== null) return reject(this.failure);
      this.onFailure = reject;
      // One write per batch: the first `window` requests, then as many as each read completed.
      // The window is the backpressure: at most `window` requests are ever unanswered.
      const send = (k: number): void => {
        const now = performance.now();
        let batch = '';
        for (let j = 0; j < k; j++) {
          sent[next] = now;
          batch += `${reqPrefix}${base + next}}\n`;
          next++;
        }
        this.child.stdin.write(batch);
      };
      this.onLines = (lines, now) => {
        for (const line of lines) {
          const id = replyId(line, repPrefix);
          const i = id - base;
          if (id < 0 || i < 0 || i >= next || !Number.isNaN(latencies[i])) {
            const why = id < 0 ? 'an unexpected reply' : `id ${id}, which was not asked for or was answered twice`;
            this.fail(new Error(`\`${this.shown}\` sent ${why}: ${excerpt(line)}`));
            return;
          }
          latencies[i] = (now - (sent[i] ?? now)) * 1e6;
        }
        received += lines.length;
        if (received === count) {
          this.onLines = null;
          this.onFailure = null;
          resolve({ latencies, elapsedNs: (now - t0) * 1e6 });
          return;
        }
        const more = Math.min(lines.length, count - next);
        if (more > 0) send(more);
      };
      send(Math.min(window, count));
    });
  }
}

/** Messages a fresh child answers before anything is measured: it has just started (a Node
 * child is still booting and then compiling its hot code: its first thousands of small
 * round trips are 2–3× slower than later ones). */
export const CHILD_WARMUP_MESSAGES = 4000;

export async function warmUpChild(peer: Peer, expect: Expect): Promise<void> {
  const small = payload(64);
  await peer.run(small, 1, CHILD_WARMUP_MESSAGES / 2, expect);
  await peer.run(small, 16, CHILD_WARMUP_MESSAGES / 2, expect);
}

/** The id of a line that is exactly `prefix` + decimal id + `}`, else -1. */
function replyId(line: Buffer, prefix: Buffer): number {
  const p = prefix.length;
  const end = line.length - 1;
  if (end <= p || end - p > 16 || line[end] !== 0x7d) return -1;
  if (line.compare(prefix, 0, p, 0, p) !== 0) return -1;
  let id = 0;
  for (let k = p; k < end; k++) {
    const d = (line[k] ?? 0) - 0x30;
    if (d < 0 || d > 9) return -1;
    id = id * 10 + d;
  }
  return id;
}

function excerpt(line: Buffer | undefined): string {
  return JSON.stringify((line ?? Buffer.alloc(0)).subarray(0, 120).toString('utf8'));
}

/** The Node-parent pipe paths, given where the binaries are. */
export function pipePaths(serveBin: string, tsChild: string): PipePath[] {
  return [
    {
      path: 'floor.node-cat',
      scenario: '7',
      label: 'floor: Node ↔ cat (raw pipe echo)',
      command: 'cat',
      args: [],
      expect: 'echo',
      rssPath: 'rss.cat',
      rssLabel: 'cat child (floor)',
    },
    {
      path: 'pipe.node-rust',
      scenario: '4',
      label: 'Node → Rust serve (pipe)',
      command: serveBin,
      args: ['serve', '--exit-after', '0'],
      expect: 'ack',
      rssPath: 'rss.rust-serve',
      rssLabel: 'rust-ts-ipc serve child',
    },
    {
      path: 'pipe.node-node',
      scenario: '5',
      label: 'Node → Node child (pipe)',
      command: process.execPath,
      args: [tsChild, '--exit-after', '0'],
      expect: 'ack',
      rssPath: 'rss.node-child',
      rssLabel: 'TypeScript child (node)',
    },
  ];
}

/** Runs one pipe path over every payload and window (but those measured interleaved, in
 * `paired.ts`); records its child's peak RSS. */
export async function runPipe(
  ctx: Ctx,
  p: PipePath,
  emit: (r: TimingRecord) => void,
  emitRss: (r: RssRecord) => void,
): Promise<void> {
  const peer = new Peer([p.command, ...p.args].join(' '), p.command, p.args);
  try {
    await warmUpChild(peer, p.expect);
    for (const size of PAYLOADS) {
      const data = payload(size);
      for (const window of WINDOWS) {
        if (window * size > MAX_IN_FLIGHT_BYTES || interleavedAt(p.path, window)) continue;
        const timed = await timeWindowed(ctx.budget, window, (count) => peer.run(data, window, count, p.expect));
        emit(windowedRecord(ctx, p, size, window, timed));
      }
    }
    const kib = await vmHwmKib(peer.child.pid);
    if (kib !== undefined) {
      emitRss({
        kind: 'rss',
        pass: ctx.pass,
        scenario: 'rss',
        path: p.rssPath,
        label: p.rssLabel,
        driver: 'node',
        side: 'child',
        kib,
      });
    }
  } finally {
    await peer.close();
  }
}
