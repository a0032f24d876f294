// Renders benches/results/REPORT.md and its SVG charts from latest.json. Run on its own
// (`node ts-app/dist/bench/report.js [--in FILE] [--out DIR]`) it re-renders an existing run;
// the driver calls `renderReport` at the end of every run.

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { INTERLEAVE_LEAD, MAX_ROUNDS } from './measure.js';
import type { ColdStartRecord, Pass, Results, RoundRatio, RssRecord, TimingRecord } from './schema.js';
import { fmtCount, fmtNs, fmtSize, fmtTickCount, fmtTickNs } from './stats.js';
import { lineChart, type Series, stackedBars, type StackedGroup } from './svg.js';

const PAYLOADS = [64, 1024, 64 * 1024, 1024 * 1024];
const WINDOWS = [1, 16, 256];

interface PathStyle {
  name: string;
  color: string;
  marker: Series['marker'];
  dash?: string;
}

/** One look per path, the same in every chart. Floors are grey and dashed. */
const STYLE: Record<string, PathStyle> = {
  'floor.ffi-noop': { name: 'floor: napi noop()', color: '#444', marker: 'none', dash: '3 3' },
  'ffi.handleLine': { name: 'FFI handleLine', color: '#d62728', marker: 'circle' },
  'ffi.handleBuffer': { name: 'FFI handleBuffer', color: '#ff7f0e', marker: 'diamond' },
  'ffi.handle': { name: 'FFI handle(object)', color: '#9467bd', marker: 'triangle' },
  'js.handleLine': { name: 'JS responder handleLine', color: '#1f77b4', marker: 'circle' },
  'ffi.handleLineAsync': { name: 'FFI handleLineAsync', color: '#8c564b', marker: 'triangle' },
  'floor.node-cat': { name: 'floor: Node ↔ cat', color: '#555', marker: 'none', dash: '9 4' },
  'pipe.node-rust': { name: 'Node → Rust serve', color: '#2ca02c', marker: 'square' },
  'pipe.node-node': { name: 'Node → Node child', color: '#17becf', marker: 'square' },
  'floor.rust-echo': { name: 'floor: Rust ↔ Rust echo', color: '#999', marker: 'none', dash: '9 3 2 3' },
  'pipe.rust-rust': { name: 'Rust → Rust serve', color: '#bcbd22', marker: 'diamond' },
  'pipe.rust-rust-spin': { name: 'Rust → Rust serve, both spinning', color: '#bcbd22', marker: 'circle', dash: '6 2' },
  'pipe.rust-node': { name: 'Rust → Node child', color: '#e377c2', marker: 'square' },
  'pipe.rust-node-native': { name: 'Rust → Node child (native engine)', color: '#e377c2', marker: 'diamond', dash: '6 2' },
  'floor.rust-call': { name: 'floor: Rust loop → Rust responder', color: '#777', marker: 'none', dash: '2 2' },
  'rust-js.sync': { name: 'Rust → JS sync callback', color: '#7f7f7f', marker: 'circle' },
  'rust-js.thread': { name: 'Rust → JS from a thread (TSFN)', color: '#aec7e8', marker: 'triangle' },
  'lib.pipe': { name: 'library: spawnPeer(serve).request', color: '#98df8a', marker: 'circle' },
  'lib.inproc-sync': { name: 'library: inProcess().requestSync', color: '#c5b0d5', marker: 'square' },
  'lib.inproc': { name: 'library: inProcess().request', color: '#c49c94', marker: 'diamond' },
  // Issue 13: the synchronous request over a pipe the addon reads, without and with spinning.
  'lib.pipe-sync': { name: "library: spawnPeer(serve, { mode: 'sync' }).requestSync", color: '#31a354', marker: 'triangle' },
  'lib.pipe-sync-spin': { name: 'library: requestSync, both sides spinning 50 µs', color: '#006d2c', marker: 'diamond', dash: '4 2' },
  // The encoding axis (issue 10): msgpack beside lib.pipe / lib.inproc-sync (the JSON side), bytes beside their raw frame floor.
  'enc.pipe-msgpack': { name: 'library msgpack: spawnPeer(serve).request', color: '#2ca02c', marker: 'triangle', dash: '6 2' },
  'enc.ffi-msgpack': { name: 'library msgpack: inProcess().requestSync', color: '#9467bd', marker: 'diamond', dash: '6 2' },
  'bytes.pipe': { name: 'library bytes: spawnPeer(serve).request', color: '#d62728', marker: 'square', dash: '6 2' },
  'bytes.inproc-sync': { name: 'library bytes: inProcess().requestSync', color: '#ff7f0e', marker: 'circle', dash: '6 2' },
  'floor.node-cat-frame': { name: 'floor: Node ↔ cat, bytes frames', color: '#333', marker: 'none', dash: '1 3' },
  // Real work: their payload axis is the documents' sizes, so they have their own table, not the charts.
  'markdown.js': { name: 'markdown-it (JS)', color: '#1f77b4', marker: 'circle' },
  'markdown.ffi': { name: 'pulldown-cmark, FFI handle', color: '#9467bd', marker: 'triangle' },
  'markdown.inproc-sync': { name: 'pulldown-cmark, inProcess().requestSync', color: '#c5b0d5', marker: 'square' },
  'markdown.inproc': { name: 'pulldown-cmark, inProcess().request', color: '#c49c94', marker: 'diamond' },
  'markdown.pipe': { name: 'pulldown-cmark, spawnPeer(serve).request', color: '#98df8a', marker: 'circle' },
};

const LATENCY_PATHS = Object.keys(STYLE).filter((p) => !p.startsWith('markdown.'));
const THROUGHPUT_PATHS = [
  'floor.node-cat',
  'pipe.node-rust',
  'pipe.node-node',
  'floor.rust-echo',
  'pipe.rust-rust',
  'pipe.rust-node',
  'pipe.rust-node-native',
  'ffi.handleLineAsync',
  'rust-js.thread',
  'lib.pipe',
  'lib.inproc',
  'enc.pipe-msgpack',
  'bytes.pipe',
  'floor.node-cat-frame',
];

class View {
  readonly timing: TimingRecord[];
  readonly cold: ColdStartRecord[];
  readonly rss: RssRecord[];
  constructor(readonly results: Results) {
    this.timing = results.records.filter((r): r is TimingRecord => r.kind === 'roundtrip' || r.kind === 'cost');
    this.cold = results.records.filter((r): r is ColdStartRecord => r.kind === 'coldstart');
    this.rss = results.records.filter((r): r is RssRecord => r.kind === 'rss');
  }
  get passes(): Pass[] {
    return this.results.meta.passes;
  }
  /** The pass headline numbers come from: pinned when it was run (steadier on small VMs). */
  get main(): Pass {
    return this.passes.includes('pinned') ? 'pinned' : (this.passes[0] ?? 'unpinned');
  }
  get(pass: Pass, p: string, payload: number, window = 1): TimingRecord | undefined {
    const want = p === 'floor.ffi-noop' ? 0 : payload;
    return this.timing.find((r) => r.pass === pass && r.path === p && r.payload === want && r.window === window);
  }
  p50(pass: Pass, p: string, payload: number, window = 1): number {
    return this.get(pass, p, payload, window)?.latency_ns.p50 ?? NaN;
  }
  /** The best throughput a path reached at `payload` over the measured windows (0 if none). */
  bestMsgsPerS(pass: Pass, p: string, payload: number): number {
    return Math.max(0, ...WINDOWS.map((w) => this.get(pass, p, payload, w)?.throughput.msgs_per_s ?? 0));
  }
}

const ok = (b: boolean): string => (b ? '✅ met' : '❌ not met');
const ratio = (a: number, b: number): string => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '—');
const ns = (x: number): string => (Number.isFinite(x) ? fmtNs(x) : '—');
/** How certain a ratio of two interleaved paths is: `; interleaved, R rounds: per round 1.02× (IQR 0.98–1.05×)`, when the
 * record of `a` at `size` (window 1) carries its round-by-round ratio to `b`; '' otherwise. */
function rounds(v: View, pass: Pass, a: string, b: string, size: number): string {
  return roundsNote(v.get(pass, a, size)?.interleaved?.ratio_to?.[b]);
}

/** Fewer rounds than this give no per-round spread worth printing (one round is the pooled ratio
 * again, its IQR of zero width). */
export const MIN_SPREAD_ROUNDS = 4;

/** The text `rounds` appends for one round-by-round ratio ('' for none); with fewer than
 * `MIN_SPREAD_ROUNDS` rounds only their count, not a median and IQR that would look certain. */
export function roundsNote(rr: RoundRatio | undefined): string {
  if (rr === undefined) return '';
  const head = `; interleaved, ${rr.rounds} round${rr.rounds === 1 ? '' : 's'}`;
  if (rr.rounds < MIN_SPREAD_ROUNDS) return `${head} (too few for a per-round spread)`;
  const x = (r: number): string => r.toFixed(2);
  return `${head}: per round ${x(rr.median)}× (IQR ${x(rr.q1)}–${x(rr.q3)}×)`;
}

const PASS_TEXT: Record<Pass, string> = { unpinned: 'unpinned', pinned: 'pinned (taskset -c 0)' };

/** Writes REPORT.md and the charts into `outDir`; returns the files written. */
export function renderReport(results: Results, outDir: string): string[] {
  const v = new View(results);
  const files: string[] = [];
  const write = (name: string, text: string): void => {
    const file = path.join(outDir, name);
    writeFileSync(file, text);
    files.push(file);
  };
  const charts: Record<Pass, string[]> = { unpinned: [], pinned: [] };
  for (const pass of v.passes) {
    const sub = `${PASS_TEXT[pass]} · ${subtitle(results)}`;
    const lat = latencyChart(v, pass, sub);
    if (lat !== null) {
      write(`latency-${pass}.svg`, lat);
      charts[pass].push(`latency-${pass}.svg`);
    }
    const thr = throughputChart(v, pass, sub);
    if (thr !== null) {
      write(`throughput-${pass}.svg`, thr);
      charts[pass].push(`throughput-${pass}.svg`);
    }
    const bd = breakdownChart(v, pass, sub);
    if (bd !== null) {
      write(`breakdown-${pass}.svg`, bd);
      charts[pass].push(`breakdown-${pass}.svg`);
    }
  }
  write('REPORT.md', markdown(v, charts));
  write('README-section.md', readmeSection(v, charts, path.relative(path.resolve(outDir, '..', '..'), outDir)));
  return files;
}

function subtitle(r: Results): string {
  const m = r.meta;
  const quick = m.mode === 'quick' ? ' · QUICK RUN (smoke test, not results)' : '';
  return `${m.machine.cpu}, ${m.machine.cores} cores · node ${m.versions.node ?? '?'} · ${m.date.slice(0, 10)} · ${m.git.commit.slice(0, 9)}${quick}`;
}

const payloadTicks = PAYLOADS.map((p) => ({ value: p, label: fmtSize(p) }));

function latencyChart(v: View, pass: Pass, sub: string): string | null {
  const panels = (['p50', 'p99'] as const).map((q) => ({
    title: q === 'p50' ? 'median (p50)' : 'p99',
    series: LATENCY_PATHS.flatMap((p): Series[] => {
      const s = STYLE[p];
      if (s === undefined) return [];
      const points = PAYLOADS.flatMap((size) => {
        const r = v.get(pass, p, size, 1);
        return r === undefined ? [] : [{ x: size, y: r.latency_ns[q] }];
      });
      return points.length === 0 ? [] : [{ ...s, points }];
    }),
  }));
  const legend = panels[0]?.series ?? [];
  if (legend.length === 0) return null;
  return lineChart({
    title: 'Latency of one message (request → reply), window 1',
    subtitle: sub,
    xLabel: 'payload (bytes of data, log scale)',
    yLabel: 'latency per message (log scale)',
    xTicks: payloadTicks,
    yFormat: fmtTickNs,
    panels,
    columns: 2,
    panelWidth: 400,
    panelHeight: 380,
    legend,
  });
}

function throughputChart(v: View, pass: Pass, sub: string): string | null {
  const panels = PAYLOADS.map((size) => ({
    title: `payload ${fmtSize(size)}`,
    series: THROUGHPUT_PATHS.flatMap((p): Series[] => {
      const s = STYLE[p];
      if (s === undefined) return [];
      const points = WINDOWS.flatMap((w) => {
        const r = v.get(pass, p, size, w);
        return r === undefined ? [] : [{ x: w, y: r.throughput.msgs_per_s }];
      });
      return points.length === 0 ? [] : [{ ...s, points }];
    }),
  }));
  const names = new Set(panels.flatMap((p) => p.series.map((s) => s.name)));
  const legend = THROUGHPUT_PATHS.flatMap((p) => {
    const s = STYLE[p];
    return s !== undefined && names.has(s.name) ? [{ ...s, points: [] }] : [];
  });
  if (legend.length === 0) return null;
  return lineChart({
    title: 'Throughput versus messages in flight',
    subtitle: sub,
    xLabel: 'window (messages in flight)',
    yLabel: 'messages per second (log scale)',
    xTicks: WINDOWS.map((w) => ({ value: w, label: String(w) })),
    yFormat: fmtTickCount,
    panels,
    columns: 2,
    panelWidth: 330,
    panelHeight: 230,
    legend,
  });
}

interface Breakdown {
  path: string;
  title: string;
  floorPath: string;
  workPath: string;
  workName: string;
  restName: string;
}

/** How each path's median splits: the crossing (its floor), the responder's JSON work
 * (measured in-process), and the rest (the difference). */
const BREAKDOWNS: Breakdown[] = [
  {
    path: 'ffi.handleLine',
    title: 'FFI handleLine',
    floorPath: 'floor.ffi-noop',
    workPath: 'cost.rust-core',
    workName: 'Rust core (serde)',
    restName: 'JS ⇄ Rust string conversion',
  },
  {
    path: 'pipe.node-rust',
    title: 'Node → Rust serve (pipe)',
    floorPath: 'floor.node-cat',
    workPath: 'cost.rust-core',
    workName: 'Rust core (serde)',
    restName: 'serve loop (framing, syscalls, wake-ups)',
  },
  {
    path: 'pipe.node-node',
    title: 'Node → Node child (pipe)',
    floorPath: 'floor.node-cat',
    workPath: 'js.handleLine',
    workName: 'TS responder (JSON)',
    restName: 'child loop (framing, stream, event loop)',
  },
  {
    path: 'pipe.rust-node',
    title: 'Rust → Node child (pipe)',
    floorPath: 'floor.rust-echo',
    workPath: 'js.handleLine',
    workName: 'TS responder (JSON)',
    restName: 'child loop (framing, stream, event loop)',
  },
  {
    path: 'rust-js.sync',
    title: 'Rust → JS sync callback',
    floorPath: 'floor.ffi-noop',
    workPath: 'js.handleLine',
    workName: 'TS responder (JSON)',
    restName: 'the call back into JS (handle scope, Rust ⇄ JS strings)',
  },
  {
    path: 'rust-js.thread',
    title: 'Rust → JS from a thread (TSFN)',
    floorPath: 'floor.ffi-noop',
    workPath: 'js.handleLine',
    workName: 'TS responder (JSON)',
    restName: 'threadsafe-function queue, JS-thread wake-up, reply hand-back',
  },
];

function breakdownRows(v: View, pass: Pass, b: Breakdown): { size: number; total: number; floor: number; work: number; rest: number }[] {
  return PAYLOADS.flatMap((size) => {
    const total = v.p50(pass, b.path, size);
    const floor = v.p50(pass, b.floorPath, size);
    const work = v.p50(pass, b.workPath, size);
    if (![total, floor, work].every(Number.isFinite)) return [];
    return [{ size, total, floor, work, rest: total - floor - work }];
  });
}

function breakdownChart(v: View, pass: Pass, sub: string): string | null {
  const groups: StackedGroup[] = BREAKDOWNS.flatMap((b) => {
    const rows = breakdownRows(v, pass, b);
    if (rows.length === 0) return [];
    return [
      {
        title: `${b.title}: crossing = ${(STYLE[b.floorPath]?.name ?? b.floorPath).replace('floor: ', '')}, encoding = ${b.workName}`,
        rows: rows.map((r) => ({
          label: fmtSize(r.size),
          values: [r.floor, r.work, Math.max(r.rest, 0)],
          note: `p50 ${fmtNs(r.total)}`,
        })),
      },
    ];
  });
  if (groups.length === 0) return null;
  return stackedBars({
    title: 'Where one message’s time goes (median, window 1)',
    subtitle: sub,
    segments: [
      { name: 'crossing: the path’s floor at the same payload (napi noop(); raw pipe echo)', color: '#7f7f7f' },
      { name: 'encoding: the responder’s JSON work, timed in-process (Rust core; TS responder)', color: '#d62728' },
      { name: 'rest: FFI string conversion; pipe host loop, framing, stream and wake-ups', color: '#1f77b4' },
    ],
    groups,
  });
}

// ---------------------------------------------------------------- markdown

function markdown(v: View, charts: Record<Pass, string[]>): string {
  const r = v.results;
  const m = r.meta;
  const L: string[] = [];
  L.push('# rust-ts-ipc benchmark report', '');
  L.push(
    `Rendered from \`latest.json\` by \`node ts-app/dist/bench/report.js\`; produced by \`npm run bench${m.mode === 'quick' ? ' -- --quick' : ''}\`. ` +
      'How it measures, and the JSON schema: [benches/README.md](../README.md).',
    '',
  );
  if (m.mode === 'quick') {
    L.push('> **Quick run.** Short measurements for a smoke test of the whole bench: the numbers below are not results.', '');
  }
  if (r.errors.length > 0) {
    L.push('> **Some paths failed and posted no numbers:**');
    for (const e of r.errors) L.push(`> - ${e.pass} \`${e.path}\`: ${e.error}`);
    L.push('');
  }
  L.push('| run | |', '|---|---|');
  L.push(`| date | ${m.date} (${m.duration_s} s) |`);
  L.push(`| commit | \`${m.git.commit.slice(0, 12)}\`${m.git.dirty ? ' (with uncommitted changes)' : ''} |`);
  L.push(`| machine | ${m.machine.cpu}, ${m.machine.cores} cores, ${m.machine.memory_gib} GiB; ${m.machine.os}; Linux ${m.machine.kernel} |`);
  L.push(`| load average at start | ${m.machine.loadavg_at_start.join(', ')} |`);
  const ver = m.versions;
  L.push(
    `| versions | node ${ver.node} (V8 ${ver.v8}, Node-API ${ver.node_api}); ${ver.rustc}; napi ${ver.napi_crate}, napi-derive ${ver.napi_derive}, @napi-rs/cli ${ver.napi_cli}; serde_json ${ver.serde_json}; TypeScript ${ver.typescript} |`,
  );
  L.push(`| passes | ${m.passes.map((p) => PASS_TEXT[p]).join(' and ')}${m.filter !== null ? `; filter \`/${m.filter}/\`` : ''} |`);
  L.push(`| mode | ${m.mode} |`, '');

  headline(v, L);
  goals(v, L);
  spinSection(v, L);
  advice(v, L);

  L.push('## Charts', '');
  for (const pass of v.passes) {
    for (const c of charts[pass]) L.push(`![${c}](${c})`, '');
  }

  breakdownTables(v, L);
  streamTables(v, L);
  hostTables(v, L);
  markdownTables(v, L);
  fullTables(v, L);
  coldAndRss(v, L);

  if (m.skipped.length > 0) {
    L.push('## Skipped', '');
    for (const s of m.skipped) L.push(`- ${s.pass} \`${s.path}\`: ${s.reason}`);
    L.push('');
  }
  L.push('## Method in brief', '');
  L.push(
    '- Every path answers the same request, `{"msg_type":"data","data":<payload>,"id":N}`, with the same reply, `{"msg_type":"ack","data":"Acknowledged: <payload>","id":N}`; every reply is checked byte for byte (pipes: matched by `id`), so a broken path fails instead of posting a number.',
    '- Latency is per message: from the moment the parent starts producing request *i* to the read that completes reply *i*. Percentiles are exact nearest-rank values over every sample (no histogram bucketing). Calls under ~4 µs are timed in batches (`batch` in the JSON) and each sample is a batch mean, so the clock read stays ~1% of a sample.',
    '- Pipe parents do no JSON themselves (requests are precomputed text, replies are compared as bytes), so a path minus its floor is the far side\'s cost; a JSON-using client adds `cost.js-json` (table below) on top, the same for the FFI string API.',
    '- Each measurement warms up first (runs of doubling length), then runs for a fixed time budget; window × payload above 64 MiB in flight is not run.',
    `- The paths the goals compare at window 1 are measured interleaved, not one after the other, so that drift between two measurements (other load, CPU frequency, where the scheduler put the processes) does not land in their ratio: the Node-parent pipe paths (\`floor.node-cat\`, \`pipe.node-rust\`, \`lib.pipe\`, \`enc.pipe-msgpack\`, \`bytes.pipe\`, \`floor.node-cat-frame\`) as one group, \`ffi.handle\`, \`lib.inproc-sync\` and \`enc.ffi-msgpack\` as another. Each path warms up as it would alone; then up to ${MAX_ROUNDS} rounds visit every path twice in mirrored order (A B C … C B A, so linear drift over a round weighs on all alike), each visit one closed run of ${INTERLEAVE_LEAD} unmeasured lead messages (or batches: the first calls after a switch of paths, and of any run, are slower) and a short block, until each path has the samples it would have had alone. Every measured sample is kept and pooled per path: the p50s and goal ratios are those of all samples; beside a goal, “per round” is the median of the ratios of each round’s p50s, with their interquartile range, how much the ratio moved during the run (not printed under ${MIN_SPREAD_ROUNDS} rounds, where it would show no spread only for want of rounds).`,
    '- The library paths (`lib.*`) send the same request through the `Peer` API and check each reply’s data and id; the raw paths send prebuilt text, so the library’s goals add the JSON work a client does anyway (`cost.js-json`). `markdown.*` renders deterministic README-like documents (the record’s payload is the document’s size): every Rust path is checked against one reference HTML (the addon’s), markdown-it against its own first result — its HTML differs from pulldown-cmark’s in details (both are CommonMark).',
    '- The pinned pass runs the driver, its children and the Rust bench under `taskset -c 0`: parent and child share one CPU, which removes cross-CPU wake-ups (large on small VMs) but serialises the two sides.',
    '',
  );
  return L.join('\n');
}

function headline(v: View, L: string[], level = '##'): void {
  const rows: [string, string | null][] = [
    ['floor.ffi-noop', null],
    ['ffi.handleLine', 'floor.ffi-noop'],
    ['ffi.handleBuffer', 'floor.ffi-noop'],
    ['ffi.handle', 'floor.ffi-noop'],
    ['js.handleLine', 'floor.ffi-noop'],
    ['ffi.handleLineAsync', 'floor.ffi-noop'],
    ['floor.node-cat', null],
    ['pipe.node-rust', 'floor.node-cat'],
    ['pipe.node-node', 'floor.node-cat'],
    ['floor.rust-echo', null],
    ['pipe.rust-rust', 'floor.rust-echo'],
    ['pipe.rust-node', 'floor.rust-echo'],
    ['pipe.rust-node-native', 'floor.rust-echo'],
    ['floor.rust-call', null],
    ['rust-js.sync', 'floor.rust-call'],
    ['rust-js.thread', 'floor.rust-call'],
    // The library, against the raw path it wraps.
    ['lib.inproc-sync', 'ffi.handle'],
    ['lib.inproc', 'ffi.handle'],
    ['lib.pipe', 'pipe.node-rust'],
    ['lib.pipe-sync', 'lib.pipe'],
    ['lib.pipe-sync-spin', 'lib.pipe'],
  ];
  const size = 64;
  L.push(`${level} Headline: one ${fmtSize(size)} message at a time (window 1)`, '');
  const head = ['path', ...v.passes.flatMap((p) => [`${p} p50`, `${p} p99`]), `vs floor or the raw path (${v.main} p50)`];
  L.push(`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
  for (const [p, floor] of rows) {
    if (!v.passes.some((pass) => v.get(pass, p, size) !== undefined)) continue;
    const cells = v.passes.flatMap((pass) => {
      const rec = v.get(pass, p, size);
      return [ns(rec?.latency_ns.p50 ?? NaN), ns(rec?.latency_ns.p99 ?? NaN)];
    });
    let vs = 'floor';
    if (floor !== null) {
      const a = v.p50(v.main, p, size);
      const b = v.p50(v.main, floor, size);
      vs = floor === 'floor.ffi-noop' ? `+${ns(a - b)} over noop` : `${ratio(a, b)} ${STYLE[floor]?.name.replace('floor: ', '') ?? floor}`;
    }
    L.push(`| ${STYLE[p]?.name ?? p} | ${cells.join(' | ')} | ${vs} |`);
  }
  L.push('');
}

function goals(v: View, L: string[]): void {
  L.push('## The issue’s performance goals', '');
  L.push('| goal | pass | measured | verdict |', '|---|---|---|---|');
  for (const pass of v.passes) {
    const noop = v.p50(pass, 'floor.ffi-noop', 0);
    const line = v.p50(pass, 'ffi.handleLine', 64);
    const js = v.p50(pass, 'js.handleLine', 64);
    if (Number.isFinite(noop) && Number.isFinite(line)) {
      L.push(`| FFI sync small call within a few hundred ns of \`noop()\` | ${pass} | handleLine ${ns(line)} − noop ${ns(noop)} = ${ns(line - noop)} | ${ok(line - noop <= 500)} (≤ 500 ns) |`);
    }
    if (Number.isFinite(js) && Number.isFinite(line)) {
      L.push(`| \`handleLine\` faster than the JS responder | ${pass} | FFI ${ns(line)} vs JS ${ns(js)} (${ratio(line, js)}) | ${ok(line < js)} |`);
    }
    const pipe = v.p50(pass, 'pipe.node-rust', 64);
    const cat = v.p50(pass, 'floor.node-cat', 64);
    if (Number.isFinite(pipe) && Number.isFinite(cat)) {
      L.push(`| Node → Rust pipe (64 B, window 1) within 1.1× of Node → cat${pass === 'pinned' ? '' : ' (goal is stated pinned)'} | ${pass} | ${ns(pipe)} vs ${ns(cat)} = ${ratio(pipe, cat)}${rounds(v, pass, 'pipe.node-rust', 'floor.node-cat', 64)} | ${ok(pipe / cat <= 1.1)} |`);
    }
    const best = v.bestMsgsPerS(pass, 'pipe.node-rust', 64);
    if (best > 0) {
      L.push(`| ≥ 1 M msgs/s pipelined small messages, Node → Rust | ${pass} | ${fmtCount(best)} msgs/s (best window, 64 B) | ${ok(best >= 1e6)} |`);
    }
    pipelinedGoals(v, pass, L);
    rustJsGoals(v, pass, L);
    libraryGoals(v, pass, L);
    syncPipeGoals(v, pass, L);
    encodingGoals(v, pass, L);
  }
  L.push('');
}

/** Issue 13's pipelined goals: 64 B, window 256, msgs/s against Node ↔ cat in the same pass. */
function pipelinedGoals(v: View, pass: Pass, L: string[]): void {
  const msgs = (p: string): number => v.get(pass, p, 64, 256)?.throughput.msgs_per_s ?? NaN;
  const cat = msgs('floor.node-cat');
  const serve = msgs('pipe.node-rust');
  const x = (a: number): string => (Number.isFinite(a / cat) ? `${(a / cat).toFixed(2)}×` : '—');
  if (Number.isFinite(serve) && Number.isFinite(cat)) {
    L.push(`| pipelined (window 256) 64 B Node → Rust \`serve\` ≥ 0.8× \`floor.node-cat\` msgs/s | ${pass} | ${fmtCount(serve)} vs ${fmtCount(cat)} msgs/s = ${x(serve)} | ${ok(serve >= 0.8 * cat)} |`);
  }
  const node = msgs('pipe.rust-node');
  const native = msgs('pipe.rust-node-native');
  if (Number.isFinite(node) && Number.isFinite(cat)) {
    const stated = pass === 'pinned' ? '' : ' (goal is stated pinned)';
    const beside = Number.isFinite(native) ? `; native engine ${fmtCount(native)} = ${x(native)}` : '';
    L.push(`| pipelined (window 256) 64 B Rust → Node child (TS engine) ≥ 0.28× \`floor.node-cat\` msgs/s${stated} | ${pass} | ${fmtCount(node)} vs ${fmtCount(cat)} msgs/s = ${x(node)}${beside} | ${ok(node >= 0.28 * cat)} |`);
  }
}

/** Issue 11's goals: Rust calling JS in-process, against the forward crossing and the pipe. */
function rustJsGoals(v: View, pass: Pass, L: string[]): void {
  const sync = v.p50(pass, 'rust-js.sync', 64);
  const js = v.p50(pass, 'js.handleLine', 64);
  const ffi = v.p50(pass, 'ffi.handleLine', 64);
  if ([sync, js, ffi].every(Number.isFinite)) {
    const bound = 1.5 * (js + ffi);
    L.push(`| \`rust-js.sync\` 64 B ≤ 1.5 × (\`js.handleLine\` + \`ffi.handleLine\`) | ${pass} | ${ns(sync)} vs 1.5 × (${ns(js)} + ${ns(ffi)}) = ${ns(bound)} | ${ok(sync <= bound)} |`);
  }
  const thread = v.p50(pass, 'rust-js.thread', 64);
  const pipe = v.p50(pass, 'pipe.rust-node', 64);
  if (Number.isFinite(thread) && Number.isFinite(pipe)) {
    const stated = pass === 'unpinned' ? '' : ' (goal is stated unpinned)';
    L.push(`| \`rust-js.thread\` window 1, 64 B ≤ 0.25 × \`pipe.rust-node\`${stated} | ${pass} | ${ns(thread)} vs ${ns(pipe)} = ${ratio(thread, pipe)} | ${ok(thread <= 0.25 * pipe)} |`);
  }
  if (Number.isFinite(thread) && Number.isFinite(sync)) {
    L.push(`| \`rust-js.thread\` window 1 p50 ≤ 10 × \`rust-js.sync\` (64 B) | ${pass} | ${ns(thread)} vs ${ns(sync)} = ${ratio(thread, sync)} | ${ok(thread <= 10 * sync)} |`);
  }
  const t256 = v.get(pass, 'rust-js.thread', 64, 256)?.throughput.msgs_per_s;
  const pipeBest = v.bestMsgsPerS(pass, 'pipe.rust-node', 64);
  if (t256 !== undefined && pipeBest > 0) {
    const why = t256 >= pipeBest ? '' : ' — every call is one trip through the JS thread’s queue and one JS call, while the pipe batches many messages per read and write (see "Which should I use")';
    L.push(`| \`rust-js.thread\` window 256 ≥ pipelined \`pipe.rust-node\` msgs/s (64 B) | ${pass} | ${fmtCount(t256)} vs ${fmtCount(pipeBest)} msgs/s (pipe's best window) | ${ok(t256 >= pipeBest)}${why} |`);
  }
}

/** The demo's direction in-process: when a JS plugin called from Rust beats a Node child. */
function rustJsAdvice(v: View, L: string[]): void {
  const p = v.main;
  const g = (path: string, size: number, w = 1): number => v.p50(p, path, size, w);
  const sync = g('rust-js.sync', 64);
  const thread = g('rust-js.thread', 64);
  const floor = g('floor.rust-call', 64);
  const pipe = g('pipe.rust-node', 64);
  if (![sync, thread, pipe].every(Number.isFinite)) return;
  const sizes = PAYLOADS.flatMap((size) => {
    const a = g('pipe.rust-node', size);
    const b = g('rust-js.thread', size);
    return Number.isFinite(a) && Number.isFinite(b) ? [`${fmtSize(size)}: pipe ${ns(a)} vs thread ${ns(b)} (${ratio(a, b)})`] : [];
  });
  L.push(
    `- **Rust calling JS (the demo's direction).** A 64 B call to the TS responder costs ${ns(sync)} as a sync callback (Rust running inside a JS call; ` +
      `the same Rust loop calling the Rust responder: ${ns(floor)}), ${ns(thread)} from a Rust thread through a ThreadsafeFunction, and ${ns(pipe)} ` +
      `to a Node child over the pipe (${ratio(pipe, thread)} the thread call). In flight, best window: ${fmtCount(v.bestMsgsPerS(p, 'rust-js.thread', 64))} calls/s from Rust threads ` +
      `against ${fmtCount(v.bestMsgsPerS(p, 'pipe.rust-node', 64))} msgs/s through the pipe: every threaded call is one trip through the JS thread's queue, while the pipe child ` +
      `answers a whole read's worth of messages per wake-up. ${sizes.join('; ')}. Call JS plugins in-process when calls are small and one at a time; ` +
      'the sync callback is cheapest but only from code already running on the JS thread; a Node child wins on isolation and, with many calls in flight, on throughput.',
  );
}

/** "Which should I use", written from this run's numbers. */
function advice(v: View, L: string[], level = '##'): void {
  const p = v.main;
  const g = (path: string, size: number, w = 1): number => v.p50(p, path, size, w);
  const noop = g('floor.ffi-noop', 0);
  const ffi = g('ffi.handleLine', 64);
  const buf = g('ffi.handleBuffer', 64);
  const pipe = g('pipe.node-rust', 64);
  const cat = g('floor.node-cat', 64);
  const rn = g('pipe.rust-node', 64);
  L.push(`${level} Which should I use (from this run, ${PASS_TEXT[p]})`, '');
  if ([noop, ffi, pipe].every(Number.isFinite)) {
    L.push(
      `- **Per-call overhead.** A small message costs ${ns(ffi)} through the addon (${ns(noop)} of it is the bare napi call; handleBuffer ${ns(buf)}), ` +
        `and ${ns(pipe)} as a pipe round trip to a Rust child (the raw pipe round trip alone, Node ↔ cat, is ${ns(cat)}): ` +
        `the pipe costs ${ratio(pipe, ffi)} the FFI call. Rust parent → Node child (the demo's direction) takes ${ns(rn)}.`,
    );
  }
  // Where pipe overhead stops mattering: the pipe's extra time over FFI as a share of the total.
  const shares = PAYLOADS.map((size) => {
    const a = g('pipe.node-rust', size);
    const b = g('ffi.handleLine', size);
    return { size, a, b, extra: (a - b) / a };
  }).filter((x) => Number.isFinite(x.extra));
  if (shares.length > 0) {
    const parts = shares.map((x) => `${fmtSize(x.size)}: pipe ${ns(x.a)} vs FFI ${ns(x.b)} (${ratio(x.a, x.b)})`);
    const flat = shares.find((x) => x.a / x.b <= 1.5);
    L.push(
      `- **When pipe overhead stops mattering.** ${parts.join('; ')}. ` +
        (flat !== undefined
          ? `From ${fmtSize(flat.size)} up the pipe is within 1.5× of FFI: copying and JSON, which both paths pay, dominate.`
          : 'At every measured size the pipe is more than 1.5× the FFI call.'),
    );
  }
  const enc = PAYLOADS.flatMap((size) => {
    const floor = g('floor.node-cat', size);
    const work = g('cost.rust-core', size) + g('cost.js-json', size);
    return Number.isFinite(floor) && Number.isFinite(work) ? [{ size, floor, work }] : [];
  });
  if (enc.length > 0) {
    const cross = enc.find((e) => e.work > e.floor);
    L.push(
      `- **Transport or encoding?** ` +
        enc.map((e) => `${fmtSize(e.size)}: pipe crossing ${ns(e.floor)}, JSON both sides ${ns(e.work)}`).join('; ') +
        '. ' +
        (cross !== undefined
          ? `From ${fmtSize(cross.size)} up encoding costs more than the pipe itself: a faster transport would not help there, a cheaper encoding (bytes, not JSON text) would.`
          : 'At every size the crossing costs more than the encoding.'),
    );
  }
  const w1 = v.get(p, 'pipe.node-rust', 64, 1)?.throughput.msgs_per_s;
  const wMax = v.bestMsgsPerS(p, 'pipe.node-rust', 64);
  if (w1 !== undefined && wMax > 0) {
    L.push(
      `- **What pipelining buys.** Node → Rust at 64 B: ${fmtCount(w1)} msgs/s one at a time, ${fmtCount(wMax)} msgs/s with up to 256 in flight (${ratio(wMax, w1)}); ` +
        'batched writes amortise the wake-ups, which dominate a small round trip.',
    );
  }
  const a1 = g('ffi.handleLineAsync', 64, 1);
  const aT = v.bestMsgsPerS(p, 'ffi.handleLineAsync', 64);
  if (Number.isFinite(a1) && Number.isFinite(ffi)) {
    L.push(
      `- **What async FFI costs.** \`handleLineAsync\` awaited one at a time: ${ns(a1)} (${ratio(a1, ffi)} the sync call), ` +
        `${fmtCount(aT)} calls/s at best with many in flight. Use it only when the Rust work is long enough to be worth moving off the JS thread.`,
    );
  }
  rustJsAdvice(v, L);
  libraryAdvice(v, L);
  encodingAdvice(v, L);
  markdownAdvice(v, L);
  L.push(
    '- **Beyond speed.** A pipe child is isolated: a crash or leak in Rust cannot take Node down, each side has its own heap and GC, and the child can be any Rust binary built once (no Node ABI coupling). ' +
      'The addon shares the process: a panic is caught and becomes a JS error, but memory corruption or an abort would kill Node; it must be built for each platform and Node-API version you ship to, and it ships a native binary in your package.',
    '',
  );
}

/** The README's performance section, from the same run: headline, charts, advice. Charts
 * are linked relative to the repository root (`dir` is the results folder from there). */
function readmeSection(v: View, charts: Record<Pass, string[]>, dir: string): string {
  const m = v.results.meta;
  const L: string[] = [];
  L.push('## Performance: pipe IPC versus FFI', '');
  L.push(
    `Measured by \`npm run bench${m.mode === 'quick' ? ' -- --quick` (a smoke test: not results)' : '`'} on ${m.machine.cpu} (${m.machine.cores} cores), ` +
      `${m.date.slice(0, 10)}, commit \`${m.git.commit.slice(0, 9)}\`, node ${m.versions.node ?? '?'}, ${m.versions.rustc ?? '?'}; ` +
      `${m.passes.map((p) => PASS_TEXT[p]).join(' and ')}. Full report, every percentile and the method: [${dir}/REPORT.md](${dir}/REPORT.md).`,
    '',
  );
  headline(v, L, '###');
  for (const c of charts[v.main]) L.push(`![${c}](${dir}/${c})`, '');
  advice(v, L, '###');
  return L.join('\n');
}

function breakdownTables(v: View, L: string[]): void {
  L.push('## Where the time goes (median, window 1)', '');
  L.push(
    'Crossing is the path’s floor (the napi `noop()` call; the raw pipe echo at the same payload); encoding is the responder’s JSON work measured in-process (`cost.rust-core` = the Rust core’s `handle_line`; `js.handleLine` = the TS responder); the rest is the difference (string conversion for FFI; the host loop, framing and wake-ups for pipes). A JSON-using JS client adds `cost.js-json` on top of any of them.',
    '',
  );
  for (const pass of v.passes) {
    L.push(`### ${PASS_TEXT[pass]}`, '');
    L.push('| path | payload | total p50 | crossing | encoding | rest | JS client JSON (extra) | dominated by |', '|---|---:|---:|---:|---:|---:|---:|---|');
    for (const b of BREAKDOWNS) {
      for (const r of breakdownRows(v, pass, b)) {
        const client = v.p50(pass, 'cost.js-json', r.size);
        const dom = r.floor >= r.work + Math.max(r.rest, 0) ? 'crossing' : r.work >= Math.max(r.rest, 0) ? 'encoding' : 'rest';
        L.push(`| ${b.title} | ${fmtSize(r.size)} | ${ns(r.total)} | ${ns(r.floor)} | ${ns(r.work)} | ${ns(r.rest)} | ${ns(client)} | ${dom} |`);
      }
    }
    L.push('');
  }
  libraryBreakdown(v, L);
}

function fullTables(v: View, L: string[]): void {
  L.push('## All measurements', '');
  const lat = (r: TimingRecord): string =>
    [r.latency_ns.p50, r.latency_ns.p90, r.latency_ns.p99, r.latency_ns.p999, r.latency_ns.max, r.latency_ns.mean].map(ns).join(' | ');
  for (const pass of v.passes) {
    const recs = v.timing.filter((r) => r.pass === pass);
    const calls = recs.filter(
      (r) =>
        r.kind === 'roundtrip' &&
        r.window === 1 &&
        (r.path.startsWith('ffi.') ||
          r.path.startsWith('js.') ||
          r.path === 'floor.ffi-noop' ||
          r.path === 'rust-js.sync' ||
          r.path === 'floor.rust-call' ||
          r.path === 'lib.inproc-sync' ||
          r.path === 'enc.ffi-msgpack' ||
          r.path === 'bytes.inproc-sync') &&
        r.path !== 'ffi.handleLineAsync',
    );
    if (calls.length > 0) {
      L.push(`### In-process calls — ${PASS_TEXT[pass]}`, '');
      L.push('| path | payload | p50 | p90 | p99 | p99.9 | max | mean | calls/s | MB/s | n | batch |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const r of calls) {
        L.push(`| ${r.label} | ${r.payload === 0 ? '—' : fmtSize(r.payload)} | ${lat(r)} | ${fmtCount(r.throughput.msgs_per_s)} | ${r.throughput.mb_per_s.toFixed(1)} | ${r.n} | ${r.batch} |`);
      }
      L.push('');
    }
    const win = recs.filter(
      (r) =>
        r.kind === 'roundtrip' &&
        (r.path.startsWith('pipe.') ||
          r.path === 'floor.node-cat' ||
          r.path === 'floor.rust-echo' ||
          r.path === 'ffi.handleLineAsync' ||
          r.path === 'rust-js.thread' ||
          r.path === 'lib.pipe' ||
          r.path === 'lib.inproc' ||
          r.path === 'enc.pipe-msgpack' ||
          r.path === 'bytes.pipe' ||
          r.path === 'floor.node-cat-frame'),
    );
    if (win.length > 0) {
      L.push(`### Pipes, async FFI and the library, by window — ${PASS_TEXT[pass]}`, '');
      L.push('| path | payload | window | p50 | p90 | p99 | p99.9 | max | mean | msgs/s | MB/s | n |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const r of win) {
        L.push(`| ${r.label} | ${fmtSize(r.payload)} | ${r.window} | ${lat(r)} | ${fmtCount(r.throughput.msgs_per_s)} | ${r.throughput.mb_per_s.toFixed(1)} | ${r.n} |`);
      }
      L.push('');
    }
    const costs = recs.filter((r) => r.kind === 'cost');
    if (costs.length > 0) {
      L.push(`### Encoding costs in-process — ${PASS_TEXT[pass]}`, '');
      L.push('| what | payload | p50 | p90 | p99 | p99.9 | max | mean | per s | MB/s | n | batch |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const r of costs) {
        L.push(`| ${r.label} | ${fmtSize(r.payload)} | ${lat(r)} | ${fmtCount(r.throughput.msgs_per_s)} | ${r.throughput.mb_per_s.toFixed(1)} | ${r.n} | ${r.batch} |`);
      }
      L.push('');
    }
  }
}

function coldAndRss(v: View, L: string[]): void {
  if (v.cold.length > 0) {
    L.push('## Cold start', '');
    L.push(
      'A pipe child: spawn → first reply. The addon and the TS module: `require`/`import` → first reply, timed inside a fresh `node` (which had already paid its own ~40 ms start-up, as an application using the addon has).',
      '',
    );
    L.push('| what | pass | p50 | p90 | max | n |', '|---|---|---:|---:|---:|---:|');
    for (const r of v.cold) L.push(`| ${r.label} | ${r.pass} | ${ns(r.latency_ns.p50)} | ${ns(r.latency_ns.p90)} | ${ns(r.latency_ns.max)} | ${r.n} |`);
    L.push('');
  }
  if (v.rss.length > 0) {
    L.push('## Peak memory', '');
    L.push('Children: `VmHWM` from `/proc/<pid>/status` after all their runs (1 MiB × 16 in flight included). Drivers: their own peak. Loads: RSS added by `require`/`import` + first call.', '');
    L.push('| what | side | pass | peak RSS |', '|---|---|---|---:|');
    for (const r of v.rss) L.push(`| ${r.label} | ${r.side} | ${r.pass} | ${(r.kib / 1024).toFixed(1)} MiB |`);
    L.push('');
  }
}

// ---------------------------------------------------------------- the library and real work (issue 9)

/** Issue 9's goals: the library's cost over the raw paths it wraps. */
function libraryGoals(v: View, pass: Pass, L: string[]): void {
  const lib = v.p50(pass, 'lib.pipe', 64);
  const raw = v.p50(pass, 'pipe.node-rust', 64);
  const json = v.p50(pass, 'cost.js-json', 64);
  if ([lib, raw, json].every(Number.isFinite)) {
    const bound = 1.15 * (raw + json);
    L.push(`| \`lib.pipe\` window 1, 64 B ≤ 1.15 × (\`pipe.node-rust\` + \`cost.js-json\`) | ${pass} | ${ns(lib)} vs 1.15 × (${ns(raw)} + ${ns(json)}) = ${ns(bound)}${rounds(v, pass, 'lib.pipe', 'pipe.node-rust', 64).replace('per round', '`lib.pipe` ÷ `pipe.node-rust` per round')} | ${ok(lib <= bound)} |`);
  }
  const libBest = v.bestMsgsPerS(pass, 'lib.pipe', 64);
  const rawBest = v.bestMsgsPerS(pass, 'pipe.node-rust', 64);
  if (libBest > 0 && rawBest > 0) {
    const why = libBest >= 0.5 * rawBest ? '' : ' — see "The library over the pipe" under "Where the time goes"';
    L.push(`| best pipelined \`lib.pipe\` msgs/s ≥ 0.5 × \`pipe.node-rust\`'s (64 B) | ${pass} | ${fmtCount(libBest)} vs ${fmtCount(rawBest)} msgs/s (best windows) = ${ratio(libBest, rawBest)} | ${ok(libBest >= 0.5 * rawBest)}${why} |`);
  }
  const ffi = v.p50(pass, 'ffi.handle', 64);
  const sync = v.p50(pass, 'lib.inproc-sync', 64);
  if (Number.isFinite(sync) && Number.isFinite(ffi)) {
    L.push(`| \`inProcess().requestSync\` 64 B ≤ 1.3 × \`ffi.handle\` (object in, object out) | ${pass} | ${ns(sync)} vs ${ns(ffi)} = ${ratio(sync, ffi)}${rounds(v, pass, 'lib.inproc-sync', 'ffi.handle', 64)} | ${ok(sync <= 1.3 * ffi)} |`);
  }
  const prom = v.p50(pass, 'lib.inproc', 64);
  if (Number.isFinite(prom) && Number.isFinite(ffi)) {
    L.push(`| \`inProcess().request\` (a Promise, window 1) 64 B ≤ 2 × \`ffi.handle\` | ${pass} | ${ns(prom)} vs ${ns(ffi)} = ${ratio(prom, ffi)} | ${ok(prom <= 2 * ffi)} |`);
  }
}

/** Issue 13's goals for `requestSync` over a pipe (64 B, window 1): against `request()` to the same child and `ffi.handleLine`. */
function syncPipeGoals(v: View, pass: Pass, L: string[]): void {
  const async = v.p50(pass, 'lib.pipe', 64);
  const ffi = v.p50(pass, 'ffi.handleLine', 64);
  for (const p of ['lib.pipe-sync', 'lib.pipe-sync-spin']) {
    const rec = v.get(pass, p, 64);
    if (rec === undefined) continue;
    const sync = rec.latency_ns.p50;
    const cpu = rec.cpu_ns_per_msg === undefined ? '' : `; CPU/msg ${ns(rec.cpu_ns_per_msg.total)} (Node ${ns(rec.cpu_ns_per_msg.parent)} + serve ${ns(rec.cpu_ns_per_msg.child)})`;
    const spin = rec.spin === undefined ? '' : `; spun ${rec.spin.parent_reads_spun}, hit ${rec.spin.parent_spin_hits}${rec.spin.disabled === undefined ? '' : ` (${rec.spin.disabled})`}`;
    const stated = pass === 'pinned' ? ' (goal is stated unpinned)' : '';
    if (Number.isFinite(async)) {
      L.push(`| \`${p}\` 64 B p50 ≤ 0.25 × \`lib.pipe\` window 1${stated} | ${pass} | ${ns(sync)} vs ${ns(async)} = ${ratio(sync, async)}${cpu}${spin} | ${ok(sync <= 0.25 * async)} |`);
    }
    if (Number.isFinite(ffi)) {
      L.push(`| \`${p}\` 64 B p50 ≤ 10 × \`ffi.handleLine\`${stated} | ${pass} | ${ns(sync)} vs ${ns(ffi)} = ${ratio(sync, ffi)} | ${ok(sync <= 10 * ffi)} |`);
    }
  }
}

/** Where the library's extra time goes, over the pipe and in-process. */
function libraryBreakdown(v: View, L: string[]): void {
  if (!v.timing.some((r) => r.path.startsWith('lib.'))) return;
  L.push('### The library over the pipe (`lib.pipe` − `pipe.node-rust`)', '');
  L.push(
    'Both talk to the same `rust-ts-ipc serve`; the raw path writes prebuilt text and compares reply bytes, the library encodes each request, decodes each reply and settles a Promise. Its own steps are timed in-process: encode = `encodeLine` (`cost.lib-encode`); read = framing, UTF-8 check, `JSON.parse` and the envelope check (`cost.lib-decode`); bookkeeping = id, pending map, the default timeout’s deadline (one shared timer), a Promise made and settled (`cost.lib-core`). The rest is the difference: the Promise reaction (a microtask per reply), the write path (one write per tick’s requests) and the stream events. `cost.js-json` is the JSON a client of the raw path would do anyway, the allowance in the goal. The last row of each pass is the best window at 64 B, per message (1 / throughput).',
    '',
  );
  for (const pass of v.passes) {
    L.push(`#### ${PASS_TEXT[pass]}`, '');
    L.push('| payload | window | `lib.pipe` | `pipe.node-rust` | library extra | encode | read | bookkeeping | rest | `cost.js-json` |', '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    const costs = (size: number): number[] => ['cost.lib-encode', 'cost.lib-decode', 'cost.lib-core'].map((c) => v.p50(pass, c, size));
    const row = (size: number, window: string, lib: number, raw: number): void => {
      const [enc = NaN, dec = NaN, core = NaN] = costs(size);
      const extra = lib - raw;
      L.push(`| ${fmtSize(size)} | ${window} | ${ns(lib)} | ${ns(raw)} | ${ns(extra)} | ${ns(enc)} | ${ns(dec)} | ${ns(core)} | ${ns(extra - enc - dec - core)} | ${ns(v.p50(pass, 'cost.js-json', size))} |`);
    };
    for (const size of PAYLOADS) {
      const lib = v.p50(pass, 'lib.pipe', size);
      const raw = v.p50(pass, 'pipe.node-rust', size);
      if (Number.isFinite(lib) && Number.isFinite(raw)) row(size, '1 (p50)', lib, raw);
    }
    const libBest = v.bestMsgsPerS(pass, 'lib.pipe', 64);
    const rawBest = v.bestMsgsPerS(pass, 'pipe.node-rust', 64);
    if (libBest > 0 && rawBest > 0) row(64, 'best (per message)', 1e9 / libBest, 1e9 / rawBest);
    L.push('');
  }
  L.push('### The in-process peer (`inProcess()` − `ffi.handle`)', '');
  L.push(
    '`requestSync` is `handle(object)` plus an id, the reply’s checks and the counters; `request` adds a Promise and its reaction (one microtask), window 1.',
    '',
  );
  L.push('| pass | payload | `ffi.handle` | `requestSync` | `request` |', '|---|---:|---:|---:|---:|');
  for (const pass of v.passes) {
    for (const size of PAYLOADS) {
      const ffi = v.p50(pass, 'ffi.handle', size);
      const sync = v.p50(pass, 'lib.inproc-sync', size);
      const prom = v.p50(pass, 'lib.inproc', size);
      if (!Number.isFinite(ffi) || (!Number.isFinite(sync) && !Number.isFinite(prom))) continue;
      const cell = (x: number): string => (Number.isFinite(x) ? `${ns(x)} (${x >= ffi ? '+' : ''}${ns(x - ffi)})` : '—');
      L.push(`| ${pass} | ${fmtSize(size)} | ${ns(ffi)} | ${cell(sync)} | ${cell(prom)} |`);
    }
  }
  L.push('');
}

/** The documents' sizes in a pass (the records' payloads), smallest first. */
function markdownSizes(v: View, pass: Pass): number[] {
  return [...new Set(v.timing.filter((r) => r.pass === pass && r.path.startsWith('markdown.')).map((r) => r.payload))].sort((a, b) => a - b);
}

/** `919 B (≈1 KiB)`: a document's exact size and the nominal one it was built for. */
function fmtDoc(bytes: number): string {
  const kib = Math.max(1, Math.round(bytes / 1024));
  return `${bytes.toLocaleString('en-US')} B (≈${kib} KiB)`;
}

const MARKDOWN_ROWS: [string, number][] = [
  ['markdown.js', 1],
  ['markdown.ffi', 1],
  ['markdown.inproc-sync', 1],
  ['markdown.inproc', 1],
  ['markdown.pipe', 1],
  ['markdown.pipe', 16],
];

/** Real work: every path at each document size, with the issue's ratios (p50 and p99). */
function markdownTables(v: View, L: string[]): void {
  if (!v.passes.some((p) => markdownSizes(v, p).length > 0)) return;
  L.push('## Real work: Markdown → HTML', '');
  L.push(
    'README-like documents (headings, emphasis, code, lists, quotes, links, text to escape) from a seeded generator, rendered by markdown-it (`commonmark` preset) in JS and by pulldown-cmark through the addon and through `rust-ts-ipc serve`. Each Rust path’s HTML is checked against the addon’s, markdown-it’s against its own: the two renderers differ in details (markdown-it escapes `"` in text, pulldown-cmark does not), by design. Ratios are of p50 / of p99, window 1; below 1× is faster. The pipe with 16 documents in flight is compared by documents per second.',
    '',
  );
  for (const pass of v.passes) {
    const sizes = markdownSizes(v, pass);
    if (sizes.length === 0) continue;
    L.push(`### ${PASS_TEXT[pass]}`, '');
    L.push('| document | path | window | p50 | p99 | docs/s | ÷ `markdown.js` | ÷ `markdown.ffi` |', '|---|---|---:|---:|---:|---:|---:|---:|');
    for (const size of sizes) {
      const js = v.get(pass, 'markdown.js', size);
      const ffi = v.get(pass, 'markdown.ffi', size);
      // With 16 in flight a document's latency includes its wait in the queue: compare docs/s instead.
      const vs = (r: TimingRecord, base: TimingRecord | undefined): string =>
        base === undefined || base === r
          ? ''
          : r.window !== 1
            ? '— (see docs/s)'
            : `${ratio(r.latency_ns.p50, base.latency_ns.p50)} / ${ratio(r.latency_ns.p99, base.latency_ns.p99)}`;
      for (const [p, w] of MARKDOWN_ROWS) {
        const r = v.get(pass, p, size, w);
        if (r === undefined) continue;
        L.push(`| ${fmtDoc(size)} | ${STYLE[p]?.name ?? p} | ${w} | ${ns(r.latency_ns.p50)} | ${ns(r.latency_ns.p99)} | ${fmtCount(r.throughput.msgs_per_s)} | ${vs(r, js)} | ${vs(r, ffi)} |`);
      }
    }
    L.push('');
  }
}

/** The library's cost in "Which should I use". */
function libraryAdvice(v: View, L: string[]): void {
  const p = v.main;
  const g = (path: string, size: number, w = 1): number => v.p50(p, path, size, w);
  const lib = g('lib.pipe', 64);
  const raw = g('pipe.node-rust', 64);
  const json = g('cost.js-json', 64);
  const sync = g('lib.inproc-sync', 64);
  const prom = g('lib.inproc', 64);
  const ffi = g('ffi.handle', 64);
  const parts: string[] = [];
  if ([lib, raw, json].every(Number.isFinite)) {
    parts.push(
      `Over the pipe a 64 B \`request\` takes ${ns(lib)} against ${ns(raw)} for the raw path (${ratio(lib, raw)}; a client that does its own JSON adds ${ns(json)} to the raw path anyway), ` +
        `and pipelined it reaches ${fmtCount(v.bestMsgsPerS(p, 'lib.pipe', 64))} msgs/s against ${fmtCount(v.bestMsgsPerS(p, 'pipe.node-rust', 64))}`,
    );
  }
  if ([sync, prom, ffi].every(Number.isFinite)) {
    parts.push(`${parts.length === 0 ? 'In' : 'in'}-process \`requestSync\` takes ${ns(sync)} and \`request\` ${ns(prom)} against ${ns(ffi)} for the addon's \`handle(object)\``);
  }
  if (parts.length === 0) return;
  L.push(
    `- **The library's cost.** ${parts.join('; ')}. ` +
      'Switching between the pipe and in-process is one line (`spawnPeer` ↔ `inProcess`); use `requestSync` where a Promise per call matters, and see "The library over the pipe" for where the difference goes.',
  );
}

/** Real work in "Which should I use": is Rust in-process faster than JS, and when does the pipe stop mattering. */
function markdownAdvice(v: View, L: string[]): void {
  const p = v.main;
  const sizes = markdownSizes(v, p);
  const g = (path: string, size: number, w = 1): number => v.p50(p, path, size, w);
  const vsJs = sizes.flatMap((size) => {
    const js = g('markdown.js', size);
    const ffi = g('markdown.ffi', size);
    return Number.isFinite(js) && Number.isFinite(ffi) ? [{ size, js, ffi }] : [];
  });
  if (vsJs.length > 0) {
    const faster = vsJs.filter((x) => x.ffi < x.js);
    const verdict =
      faster.length === vsJs.length
        ? 'Rust in-process is faster than JS at every measured size, string crossing included'
        : faster.length === 0
          ? 'Rust in-process is not faster than JS at any measured size: the crossing costs more than the faster renderer saves'
          : `Rust in-process is faster than JS from ${fmtDoc(faster[0]?.size ?? 0)} up`;
    L.push(
      `- **Real work: is Rust in-process faster than JS?** Rendering a README-like document: ` +
        vsJs.map((x) => `${fmtDoc(x.size)}: markdown-it ${ns(x.js)}, pulldown-cmark through the addon ${ns(x.ffi)} (${ratio(x.ffi, x.js)})`).join('; ') +
        `. ${verdict}. (The two renderers' HTML differs in details; both are CommonMark.)`,
    );
  }
  const pipe = sizes.flatMap((size) => {
    const a = g('markdown.pipe', size);
    const b = g('markdown.ffi', size);
    if (!Number.isFinite(a) || !Number.isFinite(b)) return [];
    const extra = a - b;
    return [{ size, pipe: a, ffi: b, extra, share: extra / a, best: v.bestMsgsPerS(p, 'markdown.pipe', size), ffiRate: v.get(p, 'markdown.ffi', size)?.throughput.msgs_per_s ?? 0 }];
  });
  if (pipe.length > 0) {
    const flat = pipe.find((x) => x.share <= 0.1);
    // The call rate at which the pipe's extra time per document adds up to a tenth of each second.
    const rates = pipe.filter((x) => x.extra > 0).map((x) => `${fmtCount(0.1 / (x.extra / 1e9))} docs/s of ${fmtDoc(x.size)}`);
    L.push(
      `- **Real work: when does the pipe's overhead stop mattering?** ` +
        pipe
          .map(
            (x) =>
              `${fmtDoc(x.size)}: pipe ${ns(x.pipe)} vs addon ${ns(x.ffi)}, the pipe adds ${ns(x.extra)} per document (${Math.round(Math.max(x.share, 0) * 100)}% of its time); ` +
              `at most ${fmtCount(x.best)} docs/s through the pipe (best window) vs ${fmtCount(x.ffiRate)} docs/s in-process`,
          )
          .join('; ') +
        '. ' +
        (flat !== undefined
          ? `From ${fmtDoc(flat.size)} up the rendering dominates and the pipe adds at most a tenth to each call: its overhead stops mattering. `
          : 'At every measured size the pipe adds more than a tenth to each call. ') +
        (rates.length > 0
          ? `Its extra time adds up to a tenth of every second at about ${rates.join(', ')}: below such rates it is noise, so choose by isolation; above them, or where each call's latency counts, use the addon.`
          : ''),
    );
  }
}

// ---------------------------------------------------------------- spinning readers (issue 13)

/** Rust → Rust `serve` with and without spinning readers: latency beside the CPU it costs, and
 * the issue's two goals (which compare passes, so they need both). */
function spinSection(v: View, L: string[]): void {
  const paths = ['pipe.rust-rust', 'pipe.rust-rust-spin'];
  if (!v.passes.some((pass) => v.get(pass, 'pipe.rust-rust-spin', 64) !== undefined)) return;
  L.push('## Spinning readers (Rust → Rust `serve`, 64 B)', '');
  L.push('| path | pass | window | p50 | p99 | CPU per message (parent + child) | parent reads spun / hit |', '|---|---|---:|---:|---:|---:|---:|');
  for (const pass of v.passes) {
    for (const w of WINDOWS) {
      for (const p of paths) {
        const r = v.get(pass, p, 64, w);
        if (r === undefined) continue;
        const cpu = r.cpu_ns_per_msg;
        const cpuText = cpu === undefined ? '—' : `${ns(cpu.total)} (${ns(cpu.parent)} + ${ns(cpu.child)})`;
        const spin = r.spin === undefined ? '—' : `${r.spin.parent_reads_spun} / ${r.spin.parent_spin_hits}`;
        L.push(`| ${STYLE[p]?.name ?? p} | ${pass} | ${w} | ${ns(r.latency_ns.p50)} | ${ns(r.latency_ns.p99)} | ${cpuText} | ${spin} |`);
      }
    }
  }
  L.push('');
  const spinUnpinned = v.p50('unpinned', 'pipe.rust-rust-spin', 64);
  const spinPinned = v.p50('pinned', 'pipe.rust-rust-spin', 64);
  const plainPinned = v.p50('pinned', 'pipe.rust-rust', 64);
  const rows: string[] = [];
  if (Number.isFinite(spinUnpinned) && Number.isFinite(plainPinned)) {
    rows.push(`| unpinned with spin ≤ 1.5 × pinned without (64 B, window 1) | spin unpinned ${ns(spinUnpinned)} vs pinned ${ns(plainPinned)} = ${ratio(spinUnpinned, plainPinned)} | ${ok(spinUnpinned <= 1.5 * plainPinned)} |`);
  }
  if (Number.isFinite(spinPinned) && Number.isFinite(plainPinned)) {
    rows.push(`| pinned with spin ≤ 1.05 × pinned without (the one-CPU guard) | ${ns(spinPinned)} vs ${ns(plainPinned)} = ${ratio(spinPinned, plainPinned)} | ${ok(spinPinned <= 1.05 * plainPinned)} |`);
  }
  if (rows.length > 0) L.push('| goal | measured | verdict |', '|---|---|---|', ...rows, '');
  L.push(
    'Spinning trades CPU for latency: after each message a reader keeps polling its pipe for up to the budget, so a reply that comes within it is read without waking a sleeping process. It pays only when the other side has a CPU of its own to answer on: on a machine whose CPUs are all busy, the woken side waits behind the spinner, spinning misses, and the adaptive budget parks itself (few reads spin). Pinned to one CPU the readers never spin.',
    '',
  );
}

// ---------------------------------------------------------------- encodings, bytes and streams (issue 10)

/** The JSON path each msgpack path is compared with: the same request through the same API. */
const ENCODING_PAIRS: { msgpack: string; json: string; where: string }[] = [
  { msgpack: 'enc.pipe-msgpack', json: 'lib.pipe', where: 'Node → Rust pipe (`spawnPeer`)' },
  { msgpack: 'enc.ffi-msgpack', json: 'lib.inproc-sync', where: 'in-process (`inProcess().requestSync`)' },
];
/**
 * Each stream path and its floor (the goal's), and context rows shown beside them against the
 * same floor (no goal of their own).
 */
const STREAM_PAIRS: { path: string; floor: string; dir: string; context?: string[] }[] = [
  { path: 'stream.node-rust', floor: 'floor.stream-node-cat', dir: 'Node → Rust' },
  {
    path: 'stream.rust-node',
    floor: 'floor.stream-rust-cat',
    dir: 'Rust → Node',
    context: ['floor.stream-rust-peer-cat', 'floor.stream-rust-node-raw'],
  },
];
const streamRecord = (v: View, pass: Pass, p: string): TimingRecord | undefined =>
  v.timing.find((r) => r.pass === pass && r.path === p && r.scenario === 'stream');

/** Issue 10's goals, each from this run's records of one pass. */
function encodingGoals(v: View, pass: Pass, L: string[]): void {
  for (const size of [64 * 1024, 1024 * 1024]) {
    const mp = v.p50(pass, 'enc.pipe-msgpack', size);
    const js = v.p50(pass, 'lib.pipe', size);
    if (Number.isFinite(mp) && Number.isFinite(js)) {
      L.push(`| ${fmtSize(size)} string, Node → Rust pipe end to end (window 1): msgpack ≤ 0.5 × json | ${pass} | \`enc.pipe-msgpack\` ${ns(mp)} vs \`lib.pipe\` ${ns(js)} = ${ratio(mp, js)}${rounds(v, pass, 'enc.pipe-msgpack', 'lib.pipe', size)} | ${ok(mp <= 0.5 * js)} |`);
    }
  }
  const size = 1024 * 1024;
  const bytes = v.p50(pass, 'bytes.pipe', size);
  const cat = v.p50(pass, 'floor.node-cat-frame', size);
  if (Number.isFinite(bytes) && Number.isFinite(cat)) {
    L.push(`| 1 MiB bytes, Node → Rust pipe end to end (window 1) ≤ 1.3 × the same frame through cat | ${pass} | \`bytes.pipe\` ${ns(bytes)} vs \`floor.node-cat-frame\` ${ns(cat)} = ${ratio(bytes, cat)}${rounds(v, pass, 'bytes.pipe', 'floor.node-cat-frame', size)} | ${ok(bytes <= 1.3 * cat)} |`);
  }
  for (const e of ENCODING_PAIRS) {
    const mp = v.p50(pass, e.msgpack, 64);
    const js = v.p50(pass, e.json, 64);
    if (Number.isFinite(mp) && Number.isFinite(js)) {
      L.push(`| 64 B, ${e.where}: msgpack ≤ 1.1 × json | ${pass} | \`${e.msgpack}\` ${ns(mp)} vs \`${e.json}\` ${ns(js)} = ${ratio(mp, js)}${rounds(v, pass, e.msgpack, e.json, 64)} | ${ok(mp <= 1.1 * js)} |`);
    }
  }
  for (const s of STREAM_PAIRS) {
    const a = streamRecord(v, pass, s.path);
    const f = streamRecord(v, pass, s.floor);
    if (a !== undefined && f !== undefined) {
      const x = a.throughput.mb_per_s;
      const y = f.throughput.mb_per_s;
      L.push(`| streaming ${s.dir} (${fmtStreamBytes(a)}, 1 MiB bytes, window ${a.window}) ≥ 70 % of cat's MB/s | ${pass} | \`${s.path}\` ${x.toFixed(0)} MB/s vs \`${s.floor}\` ${y.toFixed(0)} MB/s = ${((100 * x) / y).toFixed(0)} % | ${ok(x >= 0.7 * y)} |`);
    }
  }
}

function fmtStreamBytes(r: TimingRecord): string {
  const mib = (r.n * r.payload) / (1024 * 1024);
  return mib >= 1024 ? `${(mib / 1024).toFixed(mib % 1024 === 0 ? 0 : 2)} GiB` : `${mib.toFixed(0)} MiB`;
}

/** The smallest payload from which msgpack's p50 beats json's at every larger measured size. */
function crossover(v: View, pass: Pass, msgpack: string, json: string): { from: number | null; rows: string[] } {
  const rows: string[] = [];
  const faster: { size: number; yes: boolean }[] = [];
  for (const size of PAYLOADS) {
    const a = v.p50(pass, msgpack, size);
    const b = v.p50(pass, json, size);
    if (!Number.isFinite(a) || !Number.isFinite(b)) continue;
    rows.push(`${fmtSize(size)} ${ns(a)} vs ${ns(b)} (${ratio(a, b)})`);
    faster.push({ size, yes: a < b });
  }
  let from: number | null = null;
  for (let i = faster.length - 1; i >= 0 && faster[i]?.yes === true; i--) from = faster[i]?.size ?? null;
  return { from, rows };
}

/** The encoding advice in "Which should I use", with the crossover sizes of this run. */
function encodingAdvice(v: View, L: string[]): void {
  const p = v.main;
  const parts: string[] = [];
  for (const e of ENCODING_PAIRS) {
    const c = crossover(v, p, e.msgpack, e.json);
    if (c.rows.length === 0) continue;
    const verdict =
      c.from === null
        ? 'msgpack is not faster at the largest measured size: keep json here'
        : c.from === PAYLOADS[0]
          ? 'msgpack is faster at every measured size'
          : `msgpack is faster from ${fmtSize(c.from)} up (the crossover of this run), json below`;
    parts.push(`${e.where}, msgpack vs json p50: ${c.rows.join('; ')} — ${verdict}`);
  }
  const b = v.p50(p, 'bytes.pipe', 1024 * 1024);
  const s = v.p50(p, 'enc.pipe-msgpack', 1024 * 1024);
  const f = v.p50(p, 'floor.node-cat-frame', 1024 * 1024);
  if ([b, s, f].every(Number.isFinite)) {
    parts.push(`binary data should travel as bytes (a \`Buffer\`, msgpack only): 1 MiB as bytes takes ${ns(b)} over the pipe against ${ns(s)} as a msgpack string, ${ns(f)} for the raw frame through cat`);
  }
  if (parts.length === 0) return;
  L.push(`- **JSON or MessagePack?** ${parts.join('. ')}. Both ends must be told the same \`encoding\` (\`serve --encoding msgpack\`, \`spawnPeer(..., { encoding: 'msgpack' })\`).`);
}

/** The stream scenario: MB/s beside its cat floor, and peak RSS of both sides. */
function streamTables(v: View, L: string[]): void {
  if (!v.timing.some((r) => r.scenario === 'stream')) return;
  L.push('## Streaming: 1 MiB bytes messages, pipelined', '');
  L.push(
    'Each message is a `bytes` request echoed back (every byte crosses the pipe both ways; MB/s counts it one way). Node → Rust: `spawnPeer(serve, { encoding: \'msgpack\' }).request(\'bytes\', buf)` in a fresh `node`; Rust → Node: the Rust `Peer` (`Encoding::Msgpack`, `send(\"bytes\", Data::Bytes(buf.clone()))`) driving `node ts-app/dist/bench/bytes-echo.js` (`serveStdio` echoing bytes) from its own `cargo bench` process. Floors: the same frames through `cat`, written from one buffer and compared byte for byte. Peak RSS: each parent its own process (`maxRSS` / `VmHWM`), each child its `VmHWM` before it is closed.',
    '',
    '`floor.stream-rust-peer-cat` is context, not a goal\'s floor: the same Rust `Peer` loop as `stream.rust-node` (the `clone()` included) with `cat` as the child, which writes each request frame back as it came — the `Peer` takes it as the reply to that request (same `msg_type`, id and bytes, each checked). Its "vs cat" is what the Rust `Peer` as the driver costs against the raw floor; `stream.rust-node` against it is what the Node child costs.',
    '',
    '`floor.stream-rust-node-raw` is context too: the cat floor\'s own driver and frames, with the least a Node process can do as a whole-message echo in place of `cat` (`node ts-app/dist/bench/raw-echo.js`: each frame read whole into one reused buffer with `readSync`, written back with `writeSync`; no event loop, no decoding, no buffer per message). Its "vs cat" is what holding each 1 MiB message whole in a Node process costs against `cat`, which passes 128 KiB pieces through without holding one: no Node child of a request/reply protocol can do better than this row.',
    '',
  );
  L.push('| path | pass | streamed | window | MB/s | vs cat | p50 | p99 | max | parent peak RSS | child peak RSS |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const rss = (pass: Pass, p: string, side: string): string => {
    const r = v.rss.find((x) => x.pass === pass && x.path === `rss.${p}.${side}`);
    return r === undefined ? '—' : `${(r.kib / 1024).toFixed(1)} MiB`;
  };
  for (const pass of v.passes) {
    for (const s of STREAM_PAIRS) {
      const f = streamRecord(v, pass, s.floor);
      for (const p of [s.path, ...(s.context ?? []), s.floor]) {
        const r = streamRecord(v, pass, p);
        if (r === undefined) continue;
        const vs = p !== s.floor && f !== undefined ? `${((100 * r.throughput.mb_per_s) / f.throughput.mb_per_s).toFixed(0)} %` : '—';
        L.push(`| ${r.label} | ${pass} | ${fmtStreamBytes(r)} | ${r.window} | ${r.throughput.mb_per_s.toFixed(0)} | ${vs} | ${ns(r.latency_ns.p50)} | ${ns(r.latency_ns.p99)} | ${ns(r.latency_ns.max)} | ${rss(pass, p, 'parent')} | ${rss(pass, p, 'child')} |`);
      }
    }
  }
  L.push('');
}

/** The async host (issue 12): the thread and tokio Rust `Peer`s driving Node children, by pairs. */
const HOST_PAIRS: { thread: string; tokio: string; what: string }[] = [
  { thread: 'host.thread-node', tokio: 'host.tokio-node', what: 'one Node child' },
  { thread: 'host.thread-node-x8', tokio: 'host.tokio-node-x8', what: '8 Node children at once (total)' },
];

function hostTables(v: View, L: string[]): void {
  if (!v.timing.some((r) => r.scenario === 'host')) return;
  L.push('## The Rust hosts: thread Peer versus tokio Peer', '');
  L.push(
    'Rust → Node, 64 B `data` requests to `node ts-app/dist/main.js --exit-after 0`, every reply checked. Thread: `rust_ts_ipc::Peer` (a writer, a reader, a stderr and an exit-watcher thread per child), one caller thread per child. ' +
      'Tokio: `rust_ts_ipc::tokio::Peer` (the same four jobs as tasks), one task per child on a multi-thread runtime with a worker per CPU. The window is per child; the ×8 rows count every child\'s messages against the wall time. Host CPU/msg: user + system time of the Rust process (all its threads or tasks, not the Node children) over the measured run, per message; /proc counts it in 10 ms steps, so it means something only over full-length runs.',
    '',
  );
  L.push('| children | pass | window | thread msgs/s | tokio msgs/s | tokio ÷ thread | thread p50 | tokio p50 | thread p99 | tokio p99 | host CPU/msg thread | host CPU/msg tokio |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const pass of v.passes) {
    for (const pair of HOST_PAIRS) {
      const windows = [...new Set(v.timing.filter((r) => r.pass === pass && (r.path === pair.thread || r.path === pair.tokio)).map((r) => r.window))].sort((a, b) => a - b);
      for (const w of windows) {
        const t = v.get(pass, pair.thread, 64, w);
        const k = v.get(pass, pair.tokio, 64, w);
        const mps = (r: TimingRecord | undefined): number => r?.throughput.msgs_per_s ?? NaN;
        const cell = (x: number): string => (Number.isFinite(x) ? fmtCount(x) : '—');
        L.push(
          `| ${pair.what} | ${pass} | ${w} | ${cell(mps(t))} | ${cell(mps(k))} | ${ratio(mps(k), mps(t))} | ${ns(t?.latency_ns.p50 ?? NaN)} | ${ns(k?.latency_ns.p50 ?? NaN)} | ${ns(t?.latency_ns.p99 ?? NaN)} | ${ns(k?.latency_ns.p99 ?? NaN)} | ${ns(t?.parent_cpu_ns_per_msg ?? NaN)} | ${ns(k?.parent_cpu_ns_per_msg ?? NaN)} |`,
        );
      }
    }
  }
  L.push('');
}

function mainCli(): void {
  const args = process.argv.slice(2);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = process.env.BENCH_ROOT ?? path.resolve(here, '..', '..', '..');
  let input = path.join(root, 'benches', 'results', 'latest.json');
  let out: string | null = null;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--in') input = args[++i] ?? input;
    else if (args[i] === '--out') out = args[++i] ?? null;
    else {
      console.error('Usage: node ts-app/dist/bench/report.js [--in latest.json] [--out DIR]');
      process.exit(2);
    }
  }
  const results = JSON.parse(readFileSync(input, 'utf8')) as Results;
  const files = renderReport(results, out ?? path.dirname(input));
  console.log(`report: wrote ${files.map((f) => path.relative(process.cwd(), f)).join(', ')}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) mainCli();

