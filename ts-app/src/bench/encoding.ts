// The encoding axis (issue 10): the library's paths measured end to end from a JS value to a
// JS value, the client's own encode and decode included, in MessagePack beside JSON, and the
// `bytes` payload (a Buffer in, a Buffer out) beside its raw floor.
//
// The JSON side of the axis is not measured twice: `lib.pipe` (spawnPeer to `serve`,
// `request('data', P)`) and `lib.inproc-sync` (`inProcess().requestSync('data', P)`) are
// exactly the JSON paths, and the report pairs them with `enc.pipe-msgpack` and
// `enc.ffi-msgpack`, measured here the same way with `encoding: 'msgpack'`.

import { inProcess } from '../peer/in-process.js';
import type { Message } from '../peer/types.js';
import { type Ctx, type Emit, interleavedAt, MAX_IN_FLIGHT_BYTES, PAYLOADS, payload, vmHwmKib, WINDOWS } from './common.js';
import { bytesPayload, FrameEcho } from './frames.js';
import { Counted, isAck, spawnServe, syncRequests } from './library.js';
import { syncRecord, timeSync, timeWindowed, windowedRecord } from './measure.js';
import { CHILD_WARMUP_MESSAGES } from './pipe.js';
import type { RssRecord, TimingRecord } from './schema.js';

/** Paths that need the addon. */
export const ENCODING_NATIVE_PATHS = ['enc.ffi-msgpack', 'bytes.inproc-sync'];
/** Paths that spawn `rust-ts-ipc serve`. */
export const ENCODING_SERVE_PATHS = ['enc.pipe-msgpack', 'bytes.pipe'];
export const ENCODING_PATHS = [...ENCODING_SERVE_PATHS, ...ENCODING_NATIVE_PATHS, 'floor.node-cat-frame'];

export const L = {
  pipe: { scenario: 'enc', path: 'enc.pipe-msgpack', label: "library: spawnPeer(serve, { encoding: 'msgpack' }).request" },
  ffi: { scenario: 'enc', path: 'enc.ffi-msgpack', label: "library: inProcess({ encoding: 'msgpack' }).requestSync" },
  bytesPipe: { scenario: 'enc', path: 'bytes.pipe', label: "library: spawnPeer(serve, msgpack).request('bytes', Buffer)" },
  bytesFfi: { scenario: 'enc', path: 'bytes.inproc-sync', label: "library: inProcess(msgpack).requestSync('bytes', Buffer)" },
  floor: { scenario: '7', path: 'floor.node-cat-frame', label: 'floor: Node ↔ cat (the same bytes frames, raw echo)' },
};

/** A `bytes` reply carrying exactly `want` (a full compare: every reply checked). */
export const isBytes = (want: Buffer) => (m: Message<unknown>) =>
  m.msg_type === 'bytes' && Buffer.isBuffer(m.data) && m.data.equals(want);


export async function runEncoding(
  ctx: Ctx,
  serveBin: string,
  haveAddon: boolean,
  emit: Emit,
  emitRss: (r: RssRecord) => void,
  fail: (path: string, e: unknown) => void,
): Promise<void> {
  const guard = async (p: string, body: () => void | Promise<void>): Promise<void> => {
    if (!ctx.selected(p) || (ENCODING_NATIVE_PATHS.includes(p) && !haveAddon)) return;
    try {
      await body();
    } catch (e) {
      fail(p, e);
    }
  };

  // `enc.ffi-msgpack` (window 1 only) is measured interleaved with `lib.inproc-sync`, in `paired.ts`.
  await guard(L.bytesFfi.path, () => {
    const peer = new Counted(inProcess({ encoding: 'msgpack', exitAfter: 0 }));
    for (const size of PAYLOADS) {
      const data = bytesPayload(size);
      const timed = timeSync(ctx.budget, syncRequests(peer, 'bytes', data, isBytes(data)));
      peer.checkQuiet();
      emit(syncRecord(ctx, L.bytesFfi, 'roundtrip', size, timed));
    }
  });
  // Both pipe paths share one msgpack `serve` child, as lib.pipe and markdown.pipe do not
  // (they run in json); it is warmed up on small `data` requests first.
  const wantPipe = ctx.selected(L.pipe.path) || ctx.selected(L.bytesPipe.path);
  if (!wantPipe) {
    await guard(L.floor.path, () => runFloor(ctx, emit));
    return;
  }
  let peer: Counted<Awaited<ReturnType<typeof spawnServe>>['peer']>;
  try {
    peer = await spawnServe(serveBin, 'msgpack');
  } catch (e) {
    for (const p of [L.pipe.path, L.bytesPipe.path]) if (ctx.selected(p)) fail(p, e);
    await guard(L.floor.path, () => runFloor(ctx, emit));
    return;
  }
  try {
    await guard(L.pipe.path, async () => {
      for (const size of PAYLOADS) {
        const data = payload(size);
        const want = isAck(`Acknowledged: ${data}`);
        for (const window of WINDOWS) {
          if (window * size > MAX_IN_FLIGHT_BYTES || interleavedAt(L.pipe.path, window)) continue;
          const timed = await timeWindowed(ctx.budget, window, (count) => peer.run('data', data, want, window, count));
          emit(windowedRecord(ctx, L.pipe, size, window, timed));
        }
      }
    });
    await guard(L.bytesPipe.path, async () => {
      for (const size of PAYLOADS) {
        const data = bytesPayload(size);
        const want = isBytes(data);
        for (const window of WINDOWS) {
          if (window * size > MAX_IN_FLIGHT_BYTES || interleavedAt(L.bytesPipe.path, window)) continue;
          const timed = await timeWindowed(ctx.budget, window, (count) => peer.run('bytes', data, want, window, count));
          emit(windowedRecord(ctx, L.bytesPipe, size, window, timed));
        }
      }
    });
    const kib = await vmHwmKib(peer.peer.pid);
    if (kib !== undefined) {
      emitRss({
        kind: 'rss',
        pass: ctx.pass,
        scenario: 'rss',
        path: 'rss.rust-serve-msgpack',
        label: 'rust-ts-ipc serve --encoding msgpack child (enc.pipe-msgpack, bytes.pipe)',
        driver: 'node',
        side: 'child',
        kib,
      });
    }
  } finally {
    await peer.peer.close();
  }
  await guard(L.floor.path, () => runFloor(ctx, emit));
}

/** A fresh frame echo's warm-up, as every pipe child gets. */
export async function warmUpEcho(echo: FrameEcho): Promise<void> {
  const small = bytesPayload(64);
  await echo.run(small, 1, CHILD_WARMUP_MESSAGES / 2);
  await echo.run(small, 16, CHILD_WARMUP_MESSAGES / 2);
}

/** `floor.node-cat-frame`: the `bytes` frames through `cat`, every payload and window (window 1
 * but in `paired.ts`). */
async function runFloor(ctx: Ctx, emit: Emit): Promise<void> {
  const echo = new FrameEcho('cat', 'cat', []);
  try {
    await warmUpEcho(echo);
    for (const size of PAYLOADS) {
      const data = bytesPayload(size);
      for (const window of WINDOWS) {
        if (window * size > MAX_IN_FLIGHT_BYTES || interleavedAt(L.floor.path, window)) continue;
        const timed = await timeWindowed(ctx.budget, window, (count) => echo.run(data, window, count));
        emit(windowedRecord(ctx, L.floor, size, window, timed));
      }
    }
  } finally {
    await echo.close();
  }
}
