// The Node child of `stream.rust-node` (benches/ipc/stream.rs): the library's `serveStdio`
// over MessagePack frames, answering `bytes` with the very bytes it was sent (a Buffer in, the
// same Buffer out: no text conversion). Run as `node ts-app/dist/bench/bytes-echo.js`.

import { serveStdio } from '../serve.js';

await serveStdio({ bytes: (data) => data }, { encoding: 'msgpack' });
