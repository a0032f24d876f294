// The run's identity for latest.json: machine, versions, commit. Every report states them.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { Meta } from './schema.js';

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** A package's version from Cargo.lock (the first entry of that name). */
function cargoLockVersion(lock: string, name: string): string {
  const m = new RegExp(`\\[\\[package\\]\\]\\nname = "${name}"\\nversion = "([^"]+)"`).exec(lock);
  return m?.[1] ?? 'not in Cargo.lock';
}

function npmVersion(root: string, pkg: string): string {
  try {
    const json = JSON.parse(read(path.join(root, 'node_modules', pkg, 'package.json'))) as { version?: string };
    return json.version ?? 'unknown';
  } catch {
    return 'not installed';
  }
}

export function machine(): Meta['machine'] {
  const cpuinfo = read('/proc/cpuinfo');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const distro = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(read('/etc/os-release'))?.[1] ?? os.type();
  return {
    cpu: model.trim(),
    cores: os.cpus().length,
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${distro} (${os.machine()})`,
    kernel: os.release(),
    loadavg_at_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function versions(root: string): Record<string, string> {
  const lock = read(path.join(root, 'Cargo.lock'));
  return {
    node: process.version,
    v8: process.versions.v8,
    node_api: process.versions.napi ?? 'unknown',
    rustc: run('rustc', ['--version'], root),
    cargo: run('cargo', ['--version'], root),
    napi_crate: cargoLockVersion(lock, 'napi'),
    napi_derive: cargoLockVersion(lock, 'napi-derive'),
    napi_cli: npmVersion(root, '@napi-rs/cli'),
    serde_json: cargoLockVersion(lock, 'serde_json'),
    typescript: npmVersion(root, 'typescript'),
  };
}

export function git(root: string): { commit: string; dirty: boolean } {
  const commit = run('git', ['rev-parse', 'HEAD'], root);
  const status = run('git', ['status', '--porcelain'], root);
  return { commit, dirty: status !== '' && status !== 'unknown' };
}

/** The CPUs this process may run on, as the kernel lists them (`0`, `0-1`). */
export function cpusAllowed(): string {
  return /^Cpus_allowed_list:\s*(.+)$/m.exec(read('/proc/self/status'))?.[1]?.trim() ?? 'unknown';
}
