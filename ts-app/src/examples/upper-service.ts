// A Node child service in a few lines: `{"msg_type":"upper","data":"abc","id":1}` on stdin is
// answered with `{"msg_type":"upper","data":"ABC","id":1}` on stdout. Run it as
// `node ts-app/dist/examples/upper-service.js`; `cargo run --example node_service` drives it
// from Rust with 10 000 requests in flight. With `--encoding msgpack` it reads and writes
// MessagePack frames instead (bytes data is read as UTF-8 text).

import { type Encoding, serveStdio } from 'rust-ts-ipc';

const at = process.argv.indexOf('--encoding');
const encoding = (at === -1 ? 'json' : process.argv[at + 1]) as Encoding;

await serveStdio(
  {
    upper: (data) => String(data).toUpperCase(),
  },
  { encoding },
);
