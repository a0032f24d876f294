// Markdown documents for the `markdown.*` scenarios: deterministic, README-like (headings,
// paragraphs with emphasis, code spans and links, lists, fenced code, block quotes, text that
// HTML must escape), built up to a size so that every run and every path renders the same bytes.

/** A small deterministic generator (mulberry32), so documents never depend on Math.random. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  'pipe child parent message reply request latency throughput window payload frame line decoder ' +
  'responder addon napi process stdin stdout stderr buffer stream signal timeout restart service ' +
  'encoding bytes memory bounded backpressure event loop thread core protocol envelope id error'
).split(' ');

/** One section of a README: a heading and a few blocks chosen by `next`. */
function section(next: () => number, n: number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)] as T;
  const sentence = (): string => {
    const words = Array.from({ length: 8 + Math.floor(next() * 10) }, () => pick(WORDS));
    const i = Math.floor(next() * words.length);
    const j = Math.floor(next() * words.length);
    words[i] = `**${words[i] ?? ''}**`;
    if (j !== i) words[j] = `\`${words[j] ?? ''}()\``;
    if (next() < 0.3) words.push(`[${pick(WORDS)}](https://example.org/${pick(WORDS)}#${n})`);
    if (next() < 0.2) words.push('a < b & "c"');
    const s = words.join(' ');
    return `${s.charAt(0).toUpperCase()}${s.slice(1)}.`;
  };
  const paragraph = (): string => Array.from({ length: 2 + Math.floor(next() * 4) }, sentence).join(' ');
  const blocks: string[] = [`${next() < 0.2 ? '#' : '##'} Section ${n}: ${pick(WORDS)} and ${pick(WORDS)}`, paragraph()];
  const kind = Math.floor(next() * 4);
  if (kind === 0) blocks.push(Array.from({ length: 3 + Math.floor(next() * 3) }, () => `- ${sentence()}`).join('\n'));
  if (kind === 1) blocks.push(Array.from({ length: 3 }, (_, i) => `${i + 1}. ${sentence()}`).join('\n'));
  if (kind === 2) blocks.push(['```rust', `let ${pick(WORDS)} = peer.request("${pick(WORDS)}", data)?;`, `println!("{}", ${n});`, '```'].join('\n'));
  if (kind === 3) blocks.push(`> ${sentence()}\n> ${sentence()}`);
  blocks.push(paragraph());
  return blocks.join('\n\n');
}

/**
 * A Markdown document of about `size` bytes, the same for every call: whole sections up to the
 * last that fits, so never more than `size` (919 bytes for 1 KiB, 65 290 for 64 KiB).
 */
export function markdownDocument(size: number): string {
  const next = rng(0x5eed + size);
  let doc = '# rust-ts-ipc benchmark document\n';
  for (let n = 1; ; n++) {
    const more = `\n${section(next, n)}\n`;
    if (Buffer.byteLength(doc) + Buffer.byteLength(more) > size) break;
    doc += more;
  }
  return doc;
}
