// Cold start: how long until the first reply when nothing is running yet. A pipe child is
// spawned and asked one question; the addon (and, for comparison, the TypeScript responder
// module) is loaded in a fresh `node` process, which times `require`/`import` → first reply
// itself and reports the RSS it added.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

import { ackPrefix, type Ctx, FIXED_ID, requestPrefix } from './common.js';
import type { ColdStartRecord, RssRecord } from './schema.js';
import { summarize } from './stats.js';

const DATA = 'cold start';
const LINE = `${requestPrefix(DATA)}${FIXED_ID}}`;
const REPLY = `${ackPrefix(DATA)}${FIXED_ID}}\n`;

/** Spawn → first complete reply line, in ns; the child is then closed and reaped. */
function spawnToFirstReply(command: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<void>((res) => child.once('close', () => res()));
    let got = '';
    let settled = false;
    const finish = async (e: Error | null, ns: number): Promise<void> => {
      if (settled) return;
      settled = true;
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
      if (e === null) resolve(ns);
      else reject(e);
    };
    child.on('error', (e) => void finish(new Error(`cannot run ${command}: ${e.message}`), 0));
    child.stdin.on('error', (e) => void finish(new Error(`writing to ${command}: ${e.message}`), 0));
    void exited.then(() => finish(new Error(`${command} exited before its first reply`), 0));
    child.stdout.on('data', (chunk: Buffer) => {
      const t = performance.now();
      got += chunk.toString('utf8');
      if (!got.includes('\n')) return;
      if (got === REPLY) void finish(null, (t - t0) * 1e6);
      else void finish(new Error(`${command}: unexpected first reply ${JSON.stringify(got.slice(0, 120))}`), 0);
    });
    child.stdin.write(`${LINE}\n`);
  });
}

/** The script a fresh `node` runs: load, construct, answer once; print timing and RSS. */
function loaderScript(kind: 'addon' | 'js', target: string): string {
  const load =
    kind === 'addon'
      ? `const m = require(${JSON.stringify(target)});`
      : `const m = await import(${JSON.stringify(pathToFileURL(target).href)});`;
  return `
const { performance } = require('node:perf_hooks');
(async () => {
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  ${load}
  const r = new m.Responder({ exitAfter: 0 });
  const out = r.handleLine(${JSON.stringify(LINE)});
  const t1 = performance.now();
  const rss1 = process.memoryUsage().rss;
  process.stdout.write(JSON.stringify({ ns: (t1 - t0) * 1e6, ok: out === ${JSON.stringify(REPLY)}, rssKib: (rss1 - rss0) / 1024 }));
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
`;
}

function loadToFirstReply(script: string): Promise<{ ns: number; rssKib: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        const r = JSON.parse(out) as { ns: number; ok: boolean; rssKib: number };
        if (code !== 0 || !r.ok) throw new Error('wrong reply');
        resolve({ ns: r.ns, rssKib: r.rssKib });
      } catch {
        reject(new Error(`fresh node failed (exit ${code}): ${(err || out).slice(0, 300)}`));
      }
    });
  });
}

export interface ColdTarget {
  path: string;
  label: string;
  measure: () => Promise<{ ns: number; rssKib?: number }>;
}

export function coldTargets(root: string, serveBin: string, tsChild: string, haveAddon: boolean): ColdTarget[] {
  const targets: ColdTarget[] = [
    {
      path: 'cold.rust-serve',
      label: 'spawn rust-ts-ipc serve → first reply',
      measure: async () => ({ ns: await spawnToFirstReply(serveBin, ['serve', '--exit-after', '0']) }),
    },
    {
      path: 'cold.node-child',
      label: 'spawn node TypeScript child → first reply',
      measure: async () => ({ ns: await spawnToFirstReply(process.execPath, [tsChild, '--exit-after', '0']) }),
    },
    {
      path: 'cold.js-module',
      label: 'import TS responder module → first call (fresh node)',
      measure: () => loadToFirstReply(loaderScript('js', path.join(root, 'ts-app', 'dist', 'protocol.js'))),
    },
  ];
  if (haveAddon) {
    targets.push({
      path: 'cold.addon',
      label: 'require native addon → first call (fresh node)',
      measure: () => loadToFirstReply(loaderScript('addon', path.join(root, 'native'))),
    });
  }
  return targets;
}

/** Each cold target `coldReps` times. The addon's added RSS is recorded as well. */
export async function runCold(
  ctx: Ctx,
  targets: ColdTarget[],
  emit: (r: ColdStartRecord) => void,
  emitRss: (r: RssRecord) => void,
): Promise<void> {
  for (const t of targets) {
    if (!ctx.selected(t.path)) continue;
    const samples = new Float64Array(ctx.budget.coldReps);
    const rss: number[] = [];
    await t.measure(); // warm the page cache; not recorded
    for (let i = 0; i < samples.length; i++) {
      const r = await t.measure();
      samples[i] = r.ns;
      if (r.rssKib !== undefined) rss.push(r.rssKib);
    }
    emit({
      kind: 'coldstart',
      pass: ctx.pass,
      scenario: 'cold',
      path: t.path,
      label: t.label,
      driver: 'node',
      n: samples.length,
      latency_ns: summarize(samples),
    });
    if (rss.length > 0) {
      rss.sort((a, b) => a - b);
      emitRss({
        kind: 'rss',
        pass: ctx.pass,
        scenario: 'rss',
        path: `rss.${t.path.slice('cold.'.length)}-load`,
        label: `${t.label.split(' →')[0] ?? t.path}: RSS added (median)`,
        driver: 'node',
        side: 'in-process',
        kib: Math.round(rss[Math.floor(rss.length / 2)] ?? 0),
      });
    }
  }
}
