// The markdown bench's documents: the same bytes on every run, as large as they claim.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';

import { markdownDocument } from '../bench/docs.js';

const sha = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

describe('markdownDocument', () => {
  test('is the same document on every call and every run (no Math.random, no clock)', () => {
    assert.equal(markdownDocument(1024), markdownDocument(1024));
    assert.equal(sha(markdownDocument(1024)), '15f13fb19136ba2a');
    assert.equal(sha(markdownDocument(64 * 1024)), 'c092df471164dff0');
  });

  test('fills whole sections up to its size, never past it', () => {
    assert.equal(Buffer.byteLength(markdownDocument(1024)), 919);
    assert.equal(Buffer.byteLength(markdownDocument(64 * 1024)), 65_290);
  });

  test('is a README-like document: a title, sections, code, lists, quotes and text to escape', () => {
    const doc = markdownDocument(64 * 1024);
    assert.ok(doc.startsWith('# rust-ts-ipc benchmark document\n\n## Section 1: '));
    for (const piece of ['\n```rust\n', '\n- ', '\n1. ', '\n> ', '**', '`', '](https://example.org/', 'a < b & "c"']) {
      assert.ok(doc.includes(piece), `no ${JSON.stringify(piece)} in the document`);
    }
  });
});
