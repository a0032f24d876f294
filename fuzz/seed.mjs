// Seeds fuzz/corpus/<target>/ from the shared vectors (tests/conformance.json for the line
// targets, tests/conformance-msgpack.json for the frame targets).
// Run from the repository root: node fuzz/seed.mjs
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';

const files = ['tests/conformance.json'].filter((f) => existsSync(f));
const cases = files.flatMap((f) => JSON.parse(readFileSync(f, 'utf8')).cases);
const line = (l) => (typeof l === 'string' ? Buffer.from(l, 'utf8') : Buffer.from(l.base64, 'base64'));
const put = (target, bytes) => {
  mkdirSync(`fuzz/corpus/${target}`, { recursive: true });
  writeFileSync(`fuzz/corpus/${target}/${createHash('sha1').update(bytes).digest('hex')}`, bytes);
};
for (const c of cases) {
  const lines = c.input.map(line);
  const stream = Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
  put('decoder', Buffer.concat([Buffer.from([40, 3]), stream])); // limit 40, chunks of 4
  put('responder', Buffer.concat([Buffer.from([255, 5]), stream])); // limit 16 MiB, exit after 5
  for (const l of lines) if (l.length < 5000) put('message', l);
}
const frameFile = 'tests/conformance-msgpack.json';
const frameCases = existsSync(frameFile) ? JSON.parse(readFileSync(frameFile, 'utf8')).cases : [];
for (const c of frameCases) {
  const stream = Buffer.concat([
    ...c.input.flatMap((hex) => {
      const body = Buffer.from(hex, 'hex');
      const header = Buffer.alloc(4);
      header.writeUInt32LE(body.length);
      return [header, body];
    }),
    Buffer.from(c.tail ?? '', 'hex'),
  ]);
  if (stream.length > 65536) continue;
  put('frames', Buffer.concat([Buffer.from([40, 3]), stream])); // limit 40, chunks of 4
  put('msgpack', Buffer.concat([Buffer.from([255, 5]), stream])); // limit 16 MiB, exit after 5
}
console.log(`seeded from ${cases.length} cases in ${files.join(', ')} and ${frameCases.length} in ${frameFile}`);
