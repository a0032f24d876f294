// The stream scenario (issue 10), Node driving: 1 GiB (`--quick`: 64 MiB) in 1 MiB `bytes`
// messages, STREAM_WINDOW in flight, through `spawnPeer(serve, { encoding: 'msgpack' })`
// (`stream.node-rust`) and, as its floor, the same frames through `cat` (`floor.stream-node-cat`).
// Each runs in a fresh `node` (this file run as a script), so the parent's peak RSS is the
// stream's own, not the whole driver's; the child's is its VmHWM just before it is closed.
// Both directions are an echo: every byte crosses the pipe to the child and back. MB/s counts
// the payload one way, as elsewhere. The Rust-driven direction is `benches/ipc` (`stream.rs`).

import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { spawnPeer } from '../peer/pipe.js';
import type { Message } from '../peer/types.js';
import { type Ctx, throughput, vmHwmKib } from './common.js';
import { bytesPayload, FrameEcho } from './frames.js';
import { promiseRun, type RunOut } from './measure.js';
import type { RssRecord, TimingRecord } from './schema.js';
import { summarize } from './stats.js';

export const STREAM_MESSAGE_BYTES = 1024 * 1024;
export const STREAM_WINDOW = 8;
/** Bytes streamed: 1 GiB, or 64 MiB under `--quick`. */
export const streamBytes = (quick: boolean): number => (quick ? 64 : 1024) * 1024 * 1024;
/** Messages sent before the stream, not measured (the child's first big reads and allocations). */
const STREAM_WARMUP = 16;

export const STREAM_NODE_PATHS = ['stream.node-rust', 'floor.stream-node-cat'];

const LABELS: Record<string, string> = {
  'stream.node-rust': "stream Node → Rust: spawnPeer(serve, msgpack).request('bytes', 1 MiB)",
  'floor.stream-node-cat': 'floor: stream Node ↔ cat (the same frames, raw echo)',
};

/** What the worker prints: one JSON line. */
interface WorkerResult {
  n: number;
  warmup: number;
  elapsedNs: number;
  latencies: number[];
  parentKib: number;
  childKib: number | null;
}

/** Runs each selected Node-driven stream path in its own `node`. */
export async function runStream(
  ctx: Ctx,
  serveBin: string,
  emit: (r: TimingRecord) => void,
  emitRss: (r: RssRecord) => void,
  fail: (path: string, e: unknown) => void,
): Promise<void> {
  const total = streamBytes(ctx.quick);
  for (const path of STREAM_NODE_PATHS) {
    if (!ctx.selected(path)) continue;
    try {
      const args = [fileURLToPath(import.meta.url), '--worker', path, String(total), serveBin];
      const out = await new Promise<string>((resolve, reject) => {
        execFile(process.execPath, args, { maxBuffer: 64 * 1024 * 1024, timeout: 10 * 60 * 1000 }, (e, stdout, stderr) => {
          if (e) reject(new Error(`${e.message.split('\n')[0]}${stderr ? `: ${stderr.trim().slice(-400)}` : ''}`));
          else resolve(stdout);
        });
      });
      const r = JSON.parse(out) as WorkerResult;
      const label = LABELS[path] ?? path;
      emit({
        kind: 'roundtrip',
        pass: ctx.pass,
        scenario: 'stream',
        path,
        label,
        driver: 'node',
        payload: STREAM_MESSAGE_BYTES,
        window: STREAM_WINDOW,
        n: r.n,
        samples: r.n,
        warmup: r.warmup,
        batch: 1,
        latency_ns: summarize(Float64Array.from(r.latencies)),
        throughput: throughput(r.n, r.elapsedNs, STREAM_MESSAGE_BYTES),
        checked: r.n,
        note: `${r.n} × 1 MiB = ${(r.n / 1024).toFixed(3).replace(/\.?0+$/, '')} GiB each way, in a fresh node`,
      });
      const rss = (side: 'parent' | 'child', kib: number, what: string): RssRecord => ({
        kind: 'rss',
        pass: ctx.pass,
        scenario: 'rss',
        path: `rss.${path}.${side}`,
        label: `${path}: ${what}`,
        driver: 'node',
        side,
        kib,
      });
      emitRss(rss('parent', r.parentKib, 'the Node parent (its own process)'));
      if (r.childKib !== null) emitRss(rss('child', r.childKib, path === 'stream.node-rust' ? 'the serve child' : 'cat'));
    } catch (e) {
      fail(path, e);
    }
  }
}

/** The worker: streams `total` bytes on one path and prints a WorkerResult. */
async function worker(path: string, total: number, serveBin: string): Promise<void> {
  const data = bytesPayload(STREAM_MESSAGE_BYTES);
  const n = Math.max(1, Math.floor(total / STREAM_MESSAGE_BYTES));
  let run: (count: number) => Promise<RunOut>;
  let childPid: number | undefined;
  let close: () => Promise<unknown>;
  if (path === 'stream.node-rust') {
    const peer = spawnPeer(serveBin, ['serve', '--encoding', 'msgpack', '--exit-after', '0'], { encoding: 'msgpack' });
    let issued = 0;
    run = async (count) => {
      const base = issued;
      const r = await promiseRun<Message<unknown>>(
        {
          call: () => {
            issued++;
            return peer.request('bytes', data);
          },
          check: (m, i) => m.id === base + i + 1 && m.msg_type === 'bytes' && Buffer.isBuffer(m.data) && m.data.equals(data),
          show: (m) => JSON.stringify({ msg_type: m.msg_type, id: m.id, bytes: Buffer.isBuffer(m.data) ? m.data.length : typeof m.data }),
        },
        STREAM_WINDOW,
        count,
      );
      const s = peer.stats();
      if (s.unsolicited !== 0 || s.lateRepliesDropped !== 0 || s.inFlight !== 0 || s.queued !== 0) {
        throw new Error(`the peer saw more than the replies asked for: ${JSON.stringify(s)}`);
      }
      return r;
    };
    childPid = peer.pid;
    close = () => peer.close();
  } else if (path === 'floor.stream-node-cat') {
    const echo = new FrameEcho('cat', 'cat', []);
    run = (count) => echo.run(data, STREAM_WINDOW, count);
    childPid = echo.child.pid;
    close = () => echo.close();
  } else {
    throw new Error(`unknown stream path ${path}`);
  }
  try {
    await run(STREAM_WARMUP);
    const t = performance.now();
    const r = await run(n);
    const elapsedNs = Math.max(r.elapsedNs, (performance.now() - t) * 1e6);
    const childKib = (await vmHwmKib(childPid)) ?? null;
    const result: WorkerResult = {
      n,
      warmup: STREAM_WARMUP,
      elapsedNs,
      latencies: Array.from(r.latencies, (x) => Math.round(x)),
      parentKib: process.resourceUsage().maxRSS,
      childKib,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await close();
  }
}

if (process.argv[2] === '--worker') {
  const [, , , path, total, serveBin] = process.argv;
  try {
    await worker(path ?? '', Number(total), serveBin ?? '');
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
}
