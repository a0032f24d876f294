// A Node child service in a few lines: `{"msg_type":"upper","data":"abc","id":1}` on stdin is
// answered with `{"msg_type":"upper","data":"ABC","id":1}` on stdout. Run it as
// `node ts-app/dist/examples/upper-service.js`; `cargo run --example node_service` drives it
// from Rust with 10 000 requests in flight.

import { serveStdio } from 'rust-ts-ipc';

await serveStdio({
  upper: (data) => String(data).toUpperCase(),
});
