// A child for tests/supervise.rs that fails in one exact way, again and again: it answers
// each request `{msg_type, data, id}` with `{"msg_type":"echo","data":<data>,"id":<id>}`, and
// after its Nth answer either exits with status 7 (`crash N`) or goes on reading its stdin and
// answers nothing more, ignoring its stdin's end, until it is signalled (`hang N`).
// Usage: node tests/support/flaky-child.mjs crash|hang N
import { createInterface } from 'node:readline';

const [mode, count] = process.argv.slice(2);
const limit = Number(count);
if ((mode !== 'crash' && mode !== 'hang') || !Number.isInteger(limit) || limit < 1) {
  process.stderr.write(`usage: flaky-child.mjs crash|hang N (got ${process.argv.slice(2).join(' ')})\n`);
  process.exit(2);
}

let answered = 0;
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (answered >= limit) return;
  const request = JSON.parse(line);
  // Pipes are written synchronously on Linux: the answer is out before an exit below.
  process.stdout.write(`${JSON.stringify({ msg_type: 'echo', data: request.data, id: request.id })}\n`);
  answered += 1;
  if (answered === limit) {
    process.stderr.write(`flaky-child: ${mode} after ${limit} answers\n`);
    if (mode === 'crash') process.exit(7);
  }
});
lines.on('close', () => {
  if (mode === 'crash') process.exit(0);
});
// Hanging: stay alive (and silent) whatever comes; only a signal ends it.
if (mode === 'hang') setInterval(() => {}, 1 << 30);
