// The exception-safe in-place socket (in-place.ts) on its own: what its repointing costs, and
// that its 'uncaughtExceptionMonitor' listener goes with the last reader.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';

import { hasUserBuffer, inPlaceReaders, inPlaceRepoints, inPlaceSocket } from '../in-place.js';

/** A reader on the stdout of a `sleep` child (nothing arrives), and how to end both. */
function idleReader(): { socket: Socket; end: () => Promise<void> } {
  const child = spawn('sleep', ['30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const handle: unknown = (child.stdout as unknown as { _handle?: unknown })._handle;
  assert.ok(hasUserBuffer(handle));
  const buffer = Buffer.alloc(1024);
  const socket = inPlaceSocket({ handle, readable: true }, { buffer: () => buffer, callback: () => {} });
  const end = async (): Promise<void> => {
    const closed = once(socket, 'close');
    socket.destroy();
    child.kill();
    await Promise.all([closed, once(child, 'exit')]);
  };
  return { socket, end };
}

describe('inPlaceSocket', () => {
  test('uncaught exceptions thrown away from its reads do not point its handle again (each time would stack one more native listener on it, kept until it closes)', async () => {
    const { end } = idleReader();
    try {
      const before = inPlaceRepoints();
      // What Node does for every uncaught exception, before 'uncaughtException'.
      const emit = process.emit.bind(process) as (event: string, ...args: unknown[]) => boolean;
      for (let i = 0; i < 1000; i++) emit('uncaughtExceptionMonitor', new Error(`stray ${i}`), 'uncaughtException');
      assert.equal(inPlaceRepoints() - before, 0);
    } finally {
      await end();
    }
  });

  test("its 'uncaughtExceptionMonitor' listener is added with the first reader open and removed with the last, whatever order they close in", async () => {
    const base = process.listenerCount('uncaughtExceptionMonitor');
    const readers = [idleReader(), idleReader(), idleReader()];
    assert.deepEqual([inPlaceReaders(), process.listenerCount('uncaughtExceptionMonitor')], [3, base + 1]);
    await (readers[1] as { end: () => Promise<void> }).end();
    await (readers[0] as { end: () => Promise<void> }).end();
    assert.deepEqual([inPlaceReaders(), process.listenerCount('uncaughtExceptionMonitor')], [1, base + 1]);
    await (readers[2] as { end: () => Promise<void> }).end();
    assert.deepEqual([inPlaceReaders(), process.listenerCount('uncaughtExceptionMonitor')], [0, base]);
  });
});
