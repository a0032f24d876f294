// The child of `floor.stream-rust-node-raw` (benches/ipc/stream.rs; context, not a goal's
// floor): the least a Node process can do as a whole-message echo. Each length-prefixed frame
// is read whole into one reused buffer with `readSync` and written back with `writeSync`: no
// event loop, no decoding, no buffer per message. Driven exactly as `cat` is for
// `floor.stream-rust-cat`, it shows what holding each message whole in a Node process costs
// against `cat` (which passes 128 KiB pieces through without holding a message), so what
// is left of `stream.rust-node`'s gap is the library's. Run as `node ts-app/dist/bench/raw-echo.js`
// with stdin and stdout blocking pipes (as `std::process::Command` makes them).

import { readSync, writeSync } from 'node:fs';

const HEADER_BYTES = 4;
let buf = Buffer.allocUnsafeSlow(2 * 1024 * 1024);
let fill = 0;
for (;;) {
  // Only up to the end of the frame being read: one frame at a time, never part of the next.
  const want = fill < HEADER_BYTES ? HEADER_BYTES : HEADER_BYTES + buf.readUInt32LE(0);
  if (want > buf.length) {
    const bigger = Buffer.allocUnsafeSlow(want);
    buf.copy(bigger, 0, 0, fill);
    buf = bigger;
  }
  const n = readSync(0, buf, fill, want - fill, null);
  if (n === 0) break;
  fill += n;
  if (fill >= HEADER_BYTES && fill === HEADER_BYTES + buf.readUInt32LE(0)) {
    for (let at = 0; at < fill; ) at += writeSync(1, buf, at, fill - at);
    fill = 0;
  }
}
