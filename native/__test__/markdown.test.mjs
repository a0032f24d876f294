// The markdown service through the addon: every way in (handleLine, handle, handleBuffer,
// handleLineAsync) gives the bytes `rust-ts-ipc serve` writes, and `services` chooses what is
// answered. The conformance vectors pin the HTML itself; these pin the paths and the options.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { native, repoRoot } from './load.mjs';

const { Responder } = native;
const SERVE = fileURLToPath(new URL('target/debug/rust-ts-ipc', repoRoot));

const DOCUMENTS = [
  '# Hi',
  '',
  '*em* **strong** `code <b>` [a](http://x.example/?a=1&b=2)\n\n- one\n- two\n\n```js\nif (a < b && c) {}\n```\n',
  '<script>alert("x")</script>\n\n1 < 2 & "q" \\* é😀\u2028\u0001',
  '> quote\n>\n> 1. nested\n>    list\n\n---\n\n    indented\n',
];

const request = (data, id) => JSON.stringify(id === undefined ? { msg_type: 'markdown', data } : { msg_type: 'markdown', data, id });
const lines = DOCUMENTS.map((doc, i) => request(doc, i % 2 === 0 ? i + 1 : undefined));

/** What `rust-ts-ipc serve` answers to `input`, or undefined if the binary is not built. */
function serve(input) {
  if (!existsSync(SERVE)) return undefined;
  const r = spawnSync(SERVE, ['serve'], { input });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout.toString('utf8');
}

describe('markdown through the addon gives the bytes of rust-ts-ipc serve', () => {
  const want = serve(lines.map((l) => `${l}\n`).join(''));
  const skip = want === undefined ? `${SERVE} is not built (run \`cargo build\`)` : false;

  test('handleLine', { skip }, () => {
    const r = new Responder();
    assert.equal(lines.map((l) => r.handleLine(l)).join(''), want);
  });

  test('handleBuffer', { skip }, () => {
    const r = new Responder();
    assert.equal(lines.map((l) => r.handleBuffer(Buffer.from(`${l}\n`))).join(''), want);
  });

  test('handleLineAsync', { skip }, async () => {
    const r = new Responder();
    assert.equal((await Promise.all(lines.map((l) => r.handleLineAsync(l)))).join(''), want);
  });

  test('handle, whose reply objects stringify to the same lines', { skip }, () => {
    const r = new Responder();
    const replies = lines.flatMap((l) => r.handle(JSON.parse(l)));
    assert.equal(replies.map((m) => `${JSON.stringify(m)}\n`).join(''), want);
  });
});

describe('markdown through the addon', () => {
  test('renders CommonMark on every path', () => {
    const r = new Responder();
    assert.equal(r.handleLine(request('# Hi', 1)), '{"msg_type":"html","data":"<h1>Hi</h1>\\n","id":1}\n');
    assert.deepEqual(r.handle({ msg_type: 'markdown', data: '*x*' }), [{ msg_type: 'html', data: '<p><em>x</em></p>\n' }]);
    assert.equal(r.handleBuffer(Buffer.from(request('', 2))), '{"msg_type":"html","data":"","id":2}\n');
  });

  test('does not count toward exitAfter and is refused once the conversation has ended', () => {
    const r = new Responder({ exitAfter: 1 });
    for (let i = 0; i < 3; i++) r.handle({ msg_type: 'markdown', data: 'x' });
    assert.equal(r.done, false);
    r.handle({ msg_type: 'data', data: 'x' });
    assert.equal(r.done, true);
    assert.deepEqual(r.handle({ msg_type: 'markdown', data: 'x', id: 9 }), [
      { msg_type: 'error', data: 'line 5: conversation has ended; message ignored', id: 9 },
    ]);
  });

  test('services chooses what is answered, and the unknown-type error lists it', () => {
    const bogus = { msg_type: 'bogus', data: '' };
    const cases = [
      [undefined, 'expected greeting, data, exit or markdown', true, true],
      [['demo', 'markdown'], 'expected greeting, data, exit or markdown', true, true],
      [['demo'], 'expected greeting, data or exit', true, false],
      [['markdown'], 'expected markdown', false, true],
    ];
    for (const [services, expected, demo, markdown] of cases) {
      const r = new Responder(services === undefined ? {} : { services });
      assert.equal(r.handle(bogus)[0].data, `line 1: unknown msg_type \`bogus\`; ${expected}`, String(services));
      assert.equal(r.handle({ msg_type: 'greeting', data: '' })[0].msg_type, demo ? 'response' : 'error');
      assert.equal(r.handle({ msg_type: 'markdown', data: '' })[0].msg_type, markdown ? 'html' : 'error');
    }
  });

  test('data that is not a string is a TypeError on the object path and an error reply on the line path', () => {
    const r = new Responder();
    assert.throws(() => r.handle({ msg_type: 'markdown', data: 42 }), {
      name: 'TypeError',
      message: 'handle: field `data` must be a string, got number',
    });
    assert.equal(
      r.handleLine('{"msg_type":"markdown","data":42,"id":3}'),
      '{"msg_type":"error","data":"line 1: field `data` must be a string, got number: `{\\"msg_type\\":\\"markdown\\",\\"data\\":42,\\"id\\":3}`","id":3}\n',
    );
  });
});
