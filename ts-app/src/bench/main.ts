// `npm run bench`: the Node driver. Without --pass-run it orchestrates: one driver process per
// pass (the pinned one re-executed under `taskset -c 0`, so every child inherits the
// affinity), then merges their records into benches/results/latest.json and renders the
// report. With --pass-run it measures one pass: in-process scenarios, Node-parent pipes, the
// library (`lib.*`) and real work (`markdown.*`), the Rust bench (`cargo bench --bench ipc`),
// cold starts and peak RSS.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { coldTargets, runCold } from './cold.js';
import { type Ctx, FULL, progressLine, QUICK } from './common.js';
import { cpusAllowed, git, machine, versions } from './env.js';
import { loadAddon, NATIVE_PATHS, runAsync, runRustJsThread, runSync, SYNC_PATHS } from './inproc.js';
import { ENCODING_NATIVE_PATHS, ENCODING_SERVE_PATHS, runEncoding } from './encoding.js';
import { LIBRARY_NATIVE_PATHS, LIBRARY_SERVE_PATHS, runLibrary } from './library.js';
import { runPaired } from './paired.js';
import { pipePaths, runPipe } from './pipe.js';
import { runStream } from './stream.js';
import { renderReport } from './report.js';
import type { BenchError, BenchRecord, Pass, PassResult, Results } from './schema.js';
import { fmtNs } from './stats.js';

const USAGE = `Usage: node ts-app/dist/bench/main.js [--quick] [--pin | --unpinned] [--filter REGEX] [--out DIR]

  --quick      short runs (a smoke test of the whole bench; numbers are not results)
  --pin        only the pinned pass (everything under taskset -c 0)
  --unpinned   only the unpinned pass (default: both, side by side in the report)
  --filter RE  only paths whose id matches RE (e.g. 'pipe|floor', '^ffi', 'cold')
  --out DIR    where latest.json, REPORT.md and the charts go (default benches/results)

Builds are not done here: \`npm run bench\` builds the binary, the addon and ts-app first.`;

interface Args {
  quick: boolean;
  passes: Pass[];
  filter: string | null;
  out: string | null;
  passRun: Pass | null;
  passOut: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { quick: false, passes: ['unpinned', 'pinned'], filter: null, out: null, passRun: null, passOut: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--quick':
        a.quick = true;
        break;
      case '--pin':
        a.passes = ['pinned'];
        break;
      case '--unpinned':
        a.passes = ['unpinned'];
        break;
      case '--filter':
        a.filter = value();
        break;
      case '--out':
        a.out = value();
        break;
      case '--pass-run': {
        const p = value();
        if (p !== 'pinned' && p !== 'unpinned') throw new Error(`--pass-run expects pinned or unpinned, got ${p}`);
        a.passRun = p;
        break;
      }
      case '--pass-out':
        a.passOut = value();
        break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unexpected argument ${arg}`);
    }
  }
  if (a.filter !== null) new RegExp(a.filter); // fail early on a bad pattern
  return a;
}

/** The repository root: this file is ts-app/dist/bench/main.js (BENCH_ROOT overrides). */
function repoRoot(): string {
  return process.env.BENCH_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

function paths(root: string): { serveBin: string; tsChild: string } {
  return {
    serveBin: path.join(root, 'target', 'release', 'rust-ts-ipc'),
    tsChild: path.join(root, 'ts-app', 'dist', 'main.js'),
  };
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`bench: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  return args.passRun !== null ? runPass(args, args.passRun) : orchestrate(args);
}

/** Runs each pass in its own driver process, then writes latest.json and the report. */
async function orchestrate(args: Args): Promise<number> {
  const root = repoRoot();
  const { serveBin, tsChild } = paths(root);
  const re = args.filter !== null ? new RegExp(args.filter) : null;
  const wants = (ids: string[]): boolean => ids.some((id) => re === null || re.test(id));
  const needs: [string, string, string[]][] = [
    [serveBin, 'cargo build --release', ['pipe.node-rust', 'pipe.rust-rust', 'pipe.rust-rust-spin', 'cold.rust-serve', ...LIBRARY_SERVE_PATHS, ...ENCODING_SERVE_PATHS, 'stream.node-rust']],
    [tsChild, 'npm run build -w ts-app', ['pipe.node-node', 'pipe.rust-node', 'pipe.rust-node-native', 'stream.rust-node', 'cold.node-child', 'cold.js-module', 'host.thread-node', 'host.tokio-node', 'host.thread-node-x8', 'host.tokio-node-x8']],
  ];
  for (const [file, how, ids] of needs) {
    if (wants(ids) && !existsSync(file)) {
      console.error(`bench: ${file} is missing; run \`npm run bench\` (which builds everything) or \`${how}\``);
      return 1;
    }
  }
  if (args.passes.includes('pinned') && !hasTaskset()) {
    console.error('bench: the pinned pass needs `taskset` (util-linux); run with --unpinned');
    return 1;
  }
  const started = performance.now();
  const startMachine = machine();
  const date = new Date().toISOString();
  const outDir = args.out ?? path.join(root, 'benches', 'results');
  mkdirSync(outDir, { recursive: true });
  console.log(
    `bench: ${args.quick ? 'quick' : 'full'} run, passes: ${args.passes.join(' + ')}` +
      `${args.filter !== null ? `, filter /${args.filter}/` : ''}; ${startMachine.cpu}, ${startMachine.cores} cores, ` +
      `load ${startMachine.loadavg_at_start.join(' ')}`,
  );
  const merged: PassResult = { records: [], errors: [], skipped: [] };
  for (const pass of args.passes) {
    const tmp = path.join(os.tmpdir(), `rust-ts-ipc-bench-${process.pid}-${pass}.json`);
    const self = fileURLToPath(import.meta.url);
    const driverArgs = [self, '--pass-run', pass, '--pass-out', tmp];
    if (args.quick) driverArgs.push('--quick');
    if (args.filter !== null) driverArgs.push('--filter', args.filter);
    const [cmd, cmdArgs] =
      pass === 'pinned' ? ['taskset', ['-c', '0', process.execPath, ...driverArgs]] : [process.execPath, driverArgs];
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(cmd, cmdArgs, { stdio: 'inherit', env: { ...process.env, BENCH_ROOT: root } });
      child.on('error', () => resolve(-1));
      child.on('close', (c) => resolve(c));
    });
    try {
      const r = JSON.parse(readFileSync(tmp, 'utf8')) as PassResult;
      merged.records.push(...r.records);
      merged.errors.push(...r.errors);
      merged.skipped.push(...r.skipped);
      rmSync(tmp, { force: true });
    } catch {
      merged.errors.push({ pass, path: '*', error: `the ${pass} driver exited with ${code} and wrote no results` });
    }
  }
  const results: Results = {
    meta: {
      schema: 1,
      date,
      duration_s: Math.round((performance.now() - started) / 100) / 10,
      mode: args.quick ? 'quick' : 'full',
      passes: args.passes,
      filter: args.filter,
      git: git(root),
      machine: startMachine,
      versions: versions(root),
      skipped: merged.skipped,
    },
    records: merged.records,
    errors: merged.errors,
  };
  const latest = path.join(outDir, 'latest.json');
  writeFileSync(latest, `${JSON.stringify(results, null, 1)}\n`);
  const written = renderReport(results, outDir);
  console.log(`bench: wrote ${path.relative(process.cwd(), latest)}, ${written.map((f) => path.relative(process.cwd(), f)).join(', ')}`);
  console.log(`bench: ${results.records.length} records in ${results.meta.duration_s} s`);
  for (const e of results.errors) console.error(`bench: FAILED ${e.pass} ${e.path}: ${e.error}`);
  return results.errors.length > 0 ? 1 : 0;
}

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** One pass, in this process: every selected scenario, written to --pass-out. */
async function runPass(args: Args, pass: Pass): Promise<number> {
  const root = repoRoot();
  const { serveBin, tsChild } = paths(root);
  const re = args.filter !== null ? new RegExp(args.filter) : null;
  const ctx: Ctx = {
    pass,
    budget: args.quick ? QUICK : FULL,
    quick: args.quick,
    root,
    selected: (p) => re === null || re.test(p),
  };
  const result: PassResult = { records: [], errors: [], skipped: [] };
  const emit = (r: BenchRecord): void => {
    result.records.push(r);
    switch (r.kind) {
      case 'roundtrip':
      case 'cost':
        console.log(progressLine(r));
        break;
      case 'coldstart':
        console.log(
          `${pass.padEnd(9)}${r.path.padEnd(22)}${' '.repeat(14)}n=${String(r.n).padEnd(8)}` +
            `p50 ${fmtNs(r.latency_ns.p50).padStart(9)} p90 ${fmtNs(r.latency_ns.p90).padStart(9)} max ${fmtNs(r.latency_ns.max).padStart(9)}  ok`,
        );
        break;
      case 'rss':
        console.log(`${pass.padEnd(9)}${r.path.padEnd(22)}${' '.repeat(14)}peak RSS ${(r.kib / 1024).toFixed(1)} MiB`);
        break;
    }
  };
  const fail = (p: string, e: unknown): void => {
    const error = e instanceof Error ? e.message : String(e);
    result.errors.push({ pass, path: p, error });
    console.log(`${pass.padEnd(9)}${p.padEnd(22)}FAILED: ${error}`);
  };
  const skip = (p: string, reason: string): void => {
    result.skipped.push({ pass, path: p, reason });
  };
  console.log(`── pass ${pass}: CPUs allowed ${cpusAllowed()}${pass === 'pinned' ? ' (taskset -c 0)' : ''}`);

  const loaded = loadAddon(root);
  const addon = 'addon' in loaded ? loaded.addon : undefined;
  if (!('addon' in loaded)) {
    const wanted = [...NATIVE_PATHS, ...LIBRARY_NATIVE_PATHS, ...ENCODING_NATIVE_PATHS].filter(ctx.selected);
    if (wanted.length > 0) {
      console.log(`${pass.padEnd(9)}${'ffi.*'.padEnd(22)}skipped: ${loaded.why}`);
      for (const p of wanted) skip(p, loaded.why);
    }
  }

  for (const p of SYNC_PATHS) {
    if (!ctx.selected(p)) continue;
    try {
      runSync({ ...ctx, selected: (q) => q === p }, addon, emit);
    } catch (e) {
      fail(p, e);
    }
  }
  if (addon !== undefined && ctx.selected('ffi.handleLineAsync')) {
    try {
      await runAsync(ctx, addon, emit);
    } catch (e) {
      fail('ffi.handleLineAsync', e);
    }
  }
  if (addon !== undefined && ctx.selected('rust-js.thread')) {
    try {
      await runRustJsThread(ctx, addon, emit);
    } catch (e) {
      fail('rust-js.thread', e);
    }
  }
  for (const p of pipePaths(serveBin, tsChild)) {
    if (!ctx.selected(p.path)) continue;
    try {
      await runPipe(ctx, p, emit, emit);
    } catch (e) {
      fail(p.path, e);
    }
  }
  await runLibrary(ctx, serveBin, addon, emit, fail);
  await runEncoding(ctx, serveBin, addon !== undefined, emit, emit, fail);
  await runPaired(ctx, serveBin, tsChild, addon, emit, fail);
  await runStream(ctx, serveBin, emit, emit, fail);
  await runRustBench(ctx, tsChild, serveBin, result, fail);
  try {
    await runCold(ctx, coldTargets(root, serveBin, tsChild, addon !== undefined), emit, emit);
  } catch (e) {
    fail('cold.*', e);
  }
  emit({
    kind: 'rss',
    pass,
    scenario: 'rss',
    path: 'rss.node-driver',
    label: 'Node bench driver (all in-process scenarios)',
    driver: 'node',
    side: 'parent',
    kib: process.resourceUsage().maxRSS,
  });
  if (args.passOut !== null) writeFileSync(args.passOut, JSON.stringify(result));
  return result.errors.length > 0 ? 1 : 0;
}

/** Scenario 6 and the Rust floor and costs: `cargo bench --bench ipc`, whose records are merged. */
async function runRustBench(
  ctx: Ctx,
  tsChild: string,
  serveBin: string,
  result: PassResult,
  fail: (p: string, e: unknown) => void,
): Promise<void> {
  let ids: string[];
  try {
    const list = execFileSync('cargo', ['bench', '-q', '--bench', 'ipc', '--', '--list'], {
      cwd: ctx.root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    ids = list
      .split('\n')
      .map((l) => l.split('\t')[0] ?? '')
      .filter((id) => id !== '' && ctx.selected(id));
  } catch (e) {
    fail('rust.*', `cannot run \`cargo bench --bench ipc -- --list\`: ${(e as Error).message}`);
    return;
  }
  if (ids.length === 0) return;
  // Each stream path runs in a `cargo bench` process of its own, so its parent's peak RSS is
  // the stream's alone; the other paths share one.
  const isStream = (id: string): boolean => id.startsWith('stream.') || id.startsWith('floor.stream-');
  const groups = [ids.filter((id) => !isStream(id)), ...ids.filter(isStream).map((id) => [id])];
  for (const group of groups) {
    if (group.length > 0) await runRustGroup(ctx, tsChild, serveBin, group, result, fail);
  }
}

async function runRustGroup(
  ctx: Ctx,
  tsChild: string,
  serveBin: string,
  ids: string[],
  result: PassResult,
  fail: (p: string, e: unknown) => void,
): Promise<void> {
  const out = path.join(os.tmpdir(), `rust-ts-ipc-bench-rust-${process.pid}.json`);
  const benchArgs = ['bench', '-q', '--bench', 'ipc', '--', '--out', out, '--pass', ctx.pass, '--only', ids.join(',')];
  benchArgs.push('--node', process.execPath, '--ts-child', tsChild, '--serve', serveBin);
  if (ctx.quick) benchArgs.push('--quick');
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn('cargo', benchArgs, { cwd: ctx.root, stdio: ['ignore', 'inherit', 'inherit'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), 15 * 60 * 1000);
    child.on('error', () => resolve(-1));
    child.on('close', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  try {
    const r = JSON.parse(readFileSync(out, 'utf8')) as { records: BenchRecord[]; errors: BenchError[] };
    result.records.push(...r.records);
    result.errors.push(...r.errors);
    rmSync(out, { force: true });
  } catch {
    fail(ids.length === 1 ? (ids[0] ?? 'rust.*') : 'rust.*', `cargo bench --bench ipc exited with ${code} and wrote no results`);
  }
}

process.exitCode = await main();
