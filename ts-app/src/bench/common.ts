// What every scenario shares: the axes, the payload and the exact lines on the wire, the
// time budgets, and the console progress line.

import { readFile } from 'node:fs/promises';

import { fmtCount, fmtNs, fmtSize } from './stats.js';
import type { Pass, TimingRecord } from './schema.js';

export const PAYLOADS = [64, 1024, 64 * 1024, 1024 * 1024] as const;
export const WINDOWS = [1, 16, 256] as const;
/**
 * Paths whose window-1 records (every payload) are measured interleaved, in `paired.ts`, so the
 * goal ratios between them are not skewed by drift between two separate measurements; their
 * own modules measure only their deeper windows. The Node-parent pipe paths form one group, the
 * in-process `requestSync` paths another.
 */
export const INTERLEAVED_PIPE_PATHS = ['floor.node-cat', 'pipe.node-rust', 'lib.pipe', 'enc.pipe-msgpack', 'bytes.pipe', 'floor.node-cat-frame'];
export const INTERLEAVED_INPROC_PATHS = ['ffi.handle', 'lib.inproc-sync', 'enc.ffi-msgpack'];
/** Whether a path's record at `window` comes from the interleaved measurement. */
export const interleavedAt = (path: string, window: number): boolean =>
  window === 1 && (INTERLEAVED_PIPE_PATHS.includes(path) || INTERLEAVED_INPROC_PATHS.includes(path));

/** Window × payload above this is skipped: 256 × 1 MiB in flight measures memory, not IPC. */
export const MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;

/** How long each measurement runs; `--quick` is a smoke test of the whole bench, not a result. */
export interface Budget {
  warmMs: number;
  measureMs: number;
  minN: number;
  maxN: number;
  coldReps: number;
}
export const FULL: Budget = { warmMs: 120, measureMs: 500, minN: 30, maxN: 200_000, coldReps: 20 };
export const QUICK: Budget = { warmMs: 20, measureMs: 60, minN: 10, maxN: 20_000, coldReps: 5 };

/** `size` ASCII letters and digits (no JSON escaping, so `data` is `size` bytes on the wire). */
export function payload(size: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return alphabet.repeat(Math.ceil(size / alphabet.length)).slice(0, size);
}

/** `{"msg_type":"data","data":P,"id":` — append the id and `}`. */
export const requestPrefix = (data: string): string => `{"msg_type":"data","data":"${data}","id":`;
/** `{"msg_type":"ack","data":"Acknowledged: P","id":` — append the id and `}`. */
export const ackPrefix = (data: string): string => `{"msg_type":"ack","data":"Acknowledged: ${data}","id":`;

/** The id every in-process call carries (in-process costs do not depend on it). */
export const FIXED_ID = 7;

/** Context a scenario needs to label and time its records. */
export interface Ctx {
  pass: Pass;
  budget: Budget;
  quick: boolean;
  /** The repository root (where `native/`, `target/` and `ts-app/` are). */
  root: string;
  selected: (path: string) => boolean;
}

/** One console line per record, aligned like the Rust bench's. */
export function progressLine(r: TimingRecord): string {
  const l = r.latency_ns;
  return (
    `${r.pass.padEnd(9)}${r.path.padEnd(22)}${fmtSize(r.payload).padStart(7)} w=${String(r.window).padEnd(4)}` +
    `n=${String(r.n).padEnd(8)}p50 ${fmtNs(l.p50).padStart(9)} p90 ${fmtNs(l.p90).padStart(9)} ` +
    `p99 ${fmtNs(l.p99).padStart(9)} p99.9 ${fmtNs(l.p999).padStart(9)} max ${fmtNs(l.max).padStart(9)}  ` +
    `${fmtCount(r.throughput.msgs_per_s).padStart(10)} msg/s ${r.throughput.mb_per_s.toFixed(1).padStart(9)} MB/s  ok` +
    (r.cpu_ns_per_msg === undefined
      ? ''
      : `  cpu/msg ${fmtNs(r.cpu_ns_per_msg.total)} (${fmtNs(r.cpu_ns_per_msg.parent)} + ${fmtNs(r.cpu_ns_per_msg.child)})`) +
    (r.spin === undefined ? '' : `  spun ${r.spin.parent_reads_spun} hit ${r.spin.parent_spin_hits}`)
  );
}

/** Throughput fields from a count and the time it took. */
export function throughput(calls: number, elapsedNs: number, payloadBytes: number): TimingRecord['throughput'] {
  const msgs = elapsedNs > 0 ? (calls * 1e9) / elapsedNs : 0;
  return { msgs_per_s: Math.round(msgs), mb_per_s: Math.round((msgs * payloadBytes) / 1e4) / 100 };
}

/** Reads `VmHWM` (peak RSS, KiB) of a live process from /proc. */
export async function vmHwmKib(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(text);
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Where a scenario hands each timing record it measured. */
export type Emit = (r: TimingRecord) => void;
/** Where a scenario reports a path that failed (the bench then exits 1). */
export type Fail = (path: string, e: unknown) => void;
/** A path's scenario, id and the words the report shows for it. */
export interface Label {
  scenario: string;
  path: string;
  label: string;
}
