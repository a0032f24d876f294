// The goal comparisons, measured interleaved. A ratio of two paths measured one after the other,
// seconds or minutes apart, also holds whatever changed in between (other load on a shared
// machine, CPU frequency, which CPUs the scheduler gave the two processes): on a 2-vCPU VM that
// moved 64 B ratios of two equal ~70 µs round trips by 10–20 %. So the window-1 records of the
// paths the goals compare are measured here, together: every path of a group warms up as it
// would alone, then rounds visit each path twice in mirrored order (A B C C B A), a short block
// each time, until every path has the samples it would have had alone (`timeInterleaved`).
// Each record is still one path's distribution (all its samples pooled), so p50/p99/max mean
// what they always meant; each goal pair's record also carries the ratio round by round.
//
// Two groups: the Node-parent pipe paths (raw echo floors, the raw `serve` path, the library in
// json and msgpack, bytes), and the in-process paths (the addon's `handle`, the library's
// `requestSync` in json and msgpack). Every
// child here is its own, warmed up like its module's; the modules measure the deeper windows.

import { inProcess } from '../peer/in-process.js';
import type { PipePeer } from '../peer/pipe.js';
import { type Ctx, type Emit, type Fail, type Label, INTERLEAVED_INPROC_PATHS, INTERLEAVED_PIPE_PATHS, PAYLOADS, payload } from './common.js';
import { isBytes, L as ENC, warmUpEcho } from './encoding.js';
import { bytesPayload, FrameEcho } from './frames.js';
import { type NativeAddon, syncScenario } from './inproc.js';
import { Counted, inProcessNote, isAck, LIB_INPROC_SYNC, LIB_PIPE, spawnServe, syncRequests, withNote } from './library.js';
import {
  INTERLEAVE_LEAD,
  type InterleavedTimed,
  type InterleaveSide,
  roundRatio,
  type RunOut,
  syncRecord,
  syncSide,
  timeInterleaved,
  windowedRecord,
  windowSide,
} from './measure.js';
import { Peer as RawPeer, pipePaths, warmUpChild } from './pipe.js';
import type { RoundRatio, TimingRecord } from './schema.js';

/** The ratios (numerator, denominator) that the report's goals take between two paths of one
 * group: each is also computed round by round and stored on the numerator's record. */
export const ROUND_RATIOS: readonly (readonly [string, string])[] = [
  ['enc.pipe-msgpack', 'lib.pipe'],
  ['bytes.pipe', 'floor.node-cat-frame'],
  ['pipe.node-rust', 'floor.node-cat'],
  ['lib.pipe', 'pipe.node-rust'],
  ['enc.ffi-msgpack', 'lib.inproc-sync'],
  ['lib.inproc-sync', 'ffi.handle'],
];


/** One path of a group: how to make its side for a payload, and how to check it afterwards. */
interface Member {
  label: Label;
  kind: 'sync' | 'window';
  side: (size: number) => InterleaveSide;
  /** Throws if the path's peer saw more than the replies it asked for. */
  after?: () => void;
  note?: string;
}

/** Runs both groups' selected paths; each path fails on its own. */
export async function runPaired(
  ctx: Ctx,
  serveBin: string,
  tsChild: string,
  addon: NativeAddon | undefined,
  emit: Emit,
  fail: Fail,
): Promise<void> {
  if (addon !== undefined) await runInprocGroup(ctx, addon, emit, fail);
  await runPipeGroup(ctx, serveBin, tsChild, emit, fail);
}

async function runInprocGroup(ctx: Ctx, addon: NativeAddon, emit: Emit, fail: Fail): Promise<void> {
  const members: Member[] = [];
  for (const path of INTERLEAVED_INPROC_PATHS.filter(ctx.selected)) {
    const raw = syncScenario(path);
    if (raw !== undefined) {
      // The addon called directly (`ffi.handle`): the denominator of the library's in-process cost.
      members.push({ label: raw, kind: 'sync', side: (size) => syncSide(ctx.budget, raw.make(size, addon)) });
      continue;
    }
    try {
      const json = path === LIB_INPROC_SYNC.path;
      const peer = new Counted(json ? inProcess({ exitAfter: 0 }) : inProcess({ encoding: 'msgpack', exitAfter: 0 }));
      members.push({
        label: json ? LIB_INPROC_SYNC : ENC.ffi,
        kind: 'sync',
        side: (size) => {
          const data = payload(size);
          return syncSide(ctx.budget, syncRequests(peer, 'data', data, isAck(`Acknowledged: ${data}`)));
        },
        after: () => peer.checkQuiet(),
        note: json ? inProcessNote(ctx.root, addon) : undefined,
      });
    } catch (e) {
      fail(path, e);
    }
  }
  await runGroup(ctx, members, emit, fail);
}

async function runPipeGroup(ctx: Ctx, serveBin: string, tsChild: string, emit: Emit, fail: Fail): Promise<void> {
  const closers: (() => Promise<void>)[] = [];
  const members: Member[] = [];
  // `enc.pipe-msgpack` and `bytes.pipe` share one msgpack `serve` child, as in encoding.ts.
  let msgpack: Promise<Counted<PipePeer<unknown>>> | undefined;
  const msgpackServe = (): Promise<Counted<PipePeer<unknown>>> => {
    msgpack ??= spawnServe(serveBin, 'msgpack').then((peer) => {
      closers.push(async () => {
        await peer.peer.close();
      });
      return peer;
    });
    return msgpack;
  };
  const raw = new Map(pipePaths(serveBin, tsChild).map((p) => [p.path, p]));
  try {
    for (const path of INTERLEAVED_PIPE_PATHS.filter(ctx.selected)) {
      try {
        members.push(await pipeMember(ctx, path, serveBin, raw.get(path), msgpackServe, closers));
      } catch (e) {
        fail(path, e);
      }
    }
    await runGroup(ctx, members, emit, fail);
  } finally {
    for (const close of closers) await close();
  }
}

/** Starts (and warms up) what one pipe path talks to; its side runs window-1 closed runs on it. */
async function pipeMember(
  ctx: Ctx,
  path: string,
  serveBin: string,
  raw: ReturnType<typeof pipePaths>[number] | undefined,
  msgpackServe: () => Promise<Counted<PipePeer<unknown>>>,
  closers: (() => Promise<void>)[],
): Promise<Member> {
  const window = (label: Label, run: (size: number) => (count: number) => Promise<RunOut>): Member => ({
    label,
    kind: 'window',
    side: (size) => windowSide(ctx.budget, run(size)),
  });
  if (raw !== undefined) {
    const peer = new RawPeer([raw.command, ...raw.args].join(' '), raw.command, raw.args);
    closers.push(() => peer.close());
    await warmUpChild(peer, raw.expect);
    return window(raw, (size) => {
      const data = payload(size);
      return (count) => peer.run(data, 1, count, raw.expect);
    });
  }
  switch (path) {
    case LIB_PIPE.path: {
      const peer = await spawnServe(serveBin);
      closers.push(async () => {
        await peer.peer.close();
      });
      const m = window(LIB_PIPE, (size) => {
        const data = payload(size);
        const want = isAck(`Acknowledged: ${data}`);
        return (count) => peer.run('data', data, want, 1, count);
      });
      return { ...m, after: () => peer.checkQuiet() };
    }
    case ENC.pipe.path:
    case ENC.bytesPipe.path: {
      const peer = await msgpackServe();
      const bytes = path === ENC.bytesPipe.path;
      const m = window(bytes ? ENC.bytesPipe : ENC.pipe, (size) => {
        if (bytes) {
          const data = bytesPayload(size);
          const want = isBytes(data);
          return (count) => peer.run('bytes', data, want, 1, count);
        }
        const data = payload(size);
        const want = isAck(`Acknowledged: ${data}`);
        return (count) => peer.run('data', data, want, 1, count);
      });
      return { ...m, after: () => peer.checkQuiet() };
    }
    case ENC.floor.path: {
      const echo = new FrameEcho('cat', 'cat', []);
      closers.push(() => echo.close());
      await warmUpEcho(echo);
      return window(ENC.floor, (size) => {
        const data = bytesPayload(size);
        return (count) => echo.run(data, 1, count);
      });
    }
    default:
      throw new Error(`no interleaved pipe path ${path}`);
  }
}

/** Every payload at window 1: the group's live members measured interleaved, one record each. */
async function runGroup(ctx: Ctx, members: Member[], emit: Emit, fail: Fail): Promise<void> {
  let live = members;
  for (const size of PAYLOADS) {
    if (live.length === 0) return;
    const dead = new Set<Member>();
    const lose = (m: Member, e: unknown): void => {
      dead.add(m);
      fail(m.label.path, e);
    };
    const sides: InterleaveSide[] = [];
    const measured: Member[] = [];
    for (const m of live) {
      try {
        sides.push(m.side(size));
        measured.push(m);
      } catch (e) {
        lose(m, e);
      }
    }
    const timed = await timeInterleaved(ctx.budget, sides, (i, e) => {
      const m = measured[i];
      if (m !== undefined) lose(m, e);
    });
    const results: { m: Member; t: InterleavedTimed; r: TimingRecord }[] = [];
    for (const [i, m] of measured.entries()) {
      const t = timed[i];
      if (t === undefined || dead.has(m)) continue;
      try {
        m.after?.();
      } catch (e) {
        lose(m, e);
        continue;
      }
      const r =
        m.kind === 'sync'
          ? syncRecord(ctx, m.label, 'roundtrip', size, t)
          : windowedRecord(ctx, m.label, size, 1, { latencies: t.samples, elapsedNs: t.elapsedNs, warmup: t.warmup, n: t.checked });
      results.push({ m, t, r: withNote(r, m.note) });
    }
    for (const { m, t, r } of results) {
      const ratioTo: Record<string, RoundRatio> = {};
      for (const [num, den] of ROUND_RATIOS) {
        const d = results.find((x) => x.m.label.path === den);
        if (num === m.label.path && d !== undefined) {
          ratioTo[den] = roundRatio(t, d.t, r.latency_ns.p50, d.r.latency_ns.p50);
        }
      }
      r.interleaved = {
        with: results.filter((x) => x.m !== m).map((x) => x.m.label.path),
        rounds: t.rounds,
        lead: INTERLEAVE_LEAD,
        ...(Object.keys(ratioTo).length > 0 ? { ratio_to: ratioTo } : {}),
      };
      emit(r);
    }
    live = live.filter((m) => !dead.has(m));
  }
}
