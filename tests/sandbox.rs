//! Hostile children (`tests/fixtures/hostile.mjs`, a Node plugin that misbehaves on request)
//! under `PeerOptions::sandbox`, Node's permission model and the peer's existing caps, and the
//! demo's sandbox flags. Each misbehaviour is its own test: it is stopped or refused with an
//! error that names the limit where the evidence proves it, a fresh `Peer` with the same
//! options still answers, and nothing the child started is left running.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use rust_ts_ipc::process::sandbox::{ChildLimits, NodePermission, Sandbox};
use rust_ts_ipc::supervise::RestartPolicy;
use rust_ts_ipc::{Envelope, ErrorCode, Peer, PeerError, PeerOptions, StderrMode};
use serde_json::{json, Value};
use support::{group_is_dead, is_dead, is_reaped, skip, ts_child, BIN};

/// A variable the host holds and a plugin must not see.
const SECRET_NAME: &str = "RUST_TS_IPC_FAKE_SECRET";
const SECRET: &str = "hunter2-not-a-real-secret";

fn hostile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile.mjs")
}

fn options(sandbox: Sandbox) -> PeerOptions {
    PeerOptions {
        stderr: StderrMode::Discard,
        grace: Duration::from_millis(500),
        timeout: Duration::from_secs(60),
        sandbox,
        ..PeerOptions::default()
    }
}

fn limited(limits: ChildLimits) -> Sandbox {
    Sandbox { limits, ..Sandbox::default() }
}

fn plugin(options: PeerOptions) -> Peer {
    Peer::spawn(Command::new("node").arg(hostile()), options).unwrap()
}

fn request(peer: &Peer, msg_type: &str, data: Value) -> Result<Envelope, PeerError> {
    peer.request(msg_type, data)
}

/// The host goes on: a fresh plugin with the same options answers, and is stopped cleanly.
fn fresh_plugin_answers(sandbox: Sandbox) {
    let peer = plugin(options(sandbox));
    let reply = request(&peer, "echo", json!("still serving")).unwrap();
    assert_eq!(reply.data.as_str(), Some("still serving"));
    let pid = peer.pid();
    assert!(peer.close().unwrap().success());
    assert!(is_reaped(pid as i32));
}

/// Stops the plugin and checks that it, and everything in its process group, is gone.
fn close_and_check_gone(peer: Peer) {
    let pid = peer.pid() as i32;
    let _ = peer.close();
    drop(peer);
    assert!(is_reaped(pid), "child {pid} is still there");
    assert!(group_is_dead(pid), "something the child started is still running in group {pid}");
}

#[test]
fn a_plugin_allocating_without_bound_dies_and_the_error_names_the_memory_limit() {
    // Node reserves about 800 MiB of address space before running any JavaScript.
    let sandbox = limited(ChildLimits { max_memory_mb: Some(1024), ..ChildLimits::default() });
    let peer = plugin(options(sandbox.clone()));
    assert_eq!(request(&peer, "echo", json!(1)).unwrap().data, json!(1).into());
    let error = request(&peer, "alloc", Value::Null).unwrap_err();
    assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
    assert!(
        error.message().contains(": it died of an allocation failure with a memory limit of 1024 MiB (RLIMIT_AS"),
        "{error}"
    );
    close_and_check_gone(peer);
    fresh_plugin_answers(sandbox);
}

#[test]
fn a_plugin_spinning_the_cpu_is_killed_by_sigxcpu_and_the_error_names_the_cpu_limit() {
    let sandbox = limited(ChildLimits { max_cpu_s: Some(1), ..ChildLimits::default() });
    let peer = plugin(options(sandbox.clone()));
    let error = request(&peer, "spin", Value::Null).unwrap_err();
    assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
    assert_eq!(error.exit_status().and_then(|s| s.signal()), Some(libc_sigxcpu()));
    assert!(
        error.message().contains(
            "was killed by signal: 24 (SIGXCPU): it exceeded its CPU time limit of 1 s (RLIMIT_CPU; raise --max-cpu-s"
        ),
        "{error}"
    );
    close_and_check_gone(peer);
    fresh_plugin_answers(sandbox);
}

/// The soft and hard limits a process runs under, from the kernel's own account.
fn limits_of(pid: u32, name: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
    line[name.len()..].split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn a_restarting_peer_replaces_a_plugin_its_cpu_limit_killed_under_the_same_limits() {
    let sandbox = limited(ChildLimits { max_cpu_s: Some(1), ..ChildLimits::default() });
    let restart =
        RestartPolicy { base: Duration::from_millis(10), cap: Duration::from_millis(50), ..Default::default() };
    let options = PeerOptions { restart: Some(restart), ..options(sandbox) };
    let peer = Peer::spawn_with(
        || {
            let mut command = Command::new("node");
            command.arg(hostile());
            command
        },
        options,
    )
    .unwrap();
    let first = peer.pid();
    assert_eq!(limits_of(first, "Max cpu time"), "1 2");
    let error = request(&peer, "spin", Value::Null).unwrap_err();
    assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
    assert!(error.message().contains("(SIGXCPU): it exceeded its CPU time limit of 1 s"), "{error}");
    // The next request starts a fresh child, under the same limit.
    assert_eq!(request(&peer, "echo", json!("again")).unwrap().data.as_str(), Some("again"));
    let second = peer.pid();
    assert_ne!(second, first);
    assert_eq!(limits_of(second, "Max cpu time"), "1 2");
    assert!(is_reaped(first as i32));
    close_and_check_gone(peer);
}

/// SIGXCPU's number on Linux.
fn libc_sigxcpu() -> i32 {
    nix::sys::signal::Signal::SIGXCPU as i32
}

/// Processes and threads of user `uid` now (what RLIMIT_NPROC is checked against).
fn tasks_of_user(uid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter(|status| {
            status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next())
                == Some(uid.to_string().as_str())
        })
        .map(|status| {
            let threads = status.lines().find_map(|l| l.strip_prefix("Threads:"));
            threads.and_then(|t| t.trim().parse().ok()).unwrap_or(1)
        })
        .sum()
}

/// This process's real user id.
fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_plugin_starting_200_grandchildren_is_held_to_max_procs_and_none_outlives_it() {
    let uid = uid();
    // Room for Node's own threads, not for 200 more processes.
    let max_procs = tasks_of_user(uid) + 40;
    let sandbox = limited(ChildLimits { max_procs: Some(max_procs), ..ChildLimits::default() });
    let peer = plugin(options(sandbox.clone()));
    let reply = request(&peer, "spawn", json!(200)).unwrap();
    let report = reply.data.as_json().unwrap().clone();
    let pids: Vec<i32> = report["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap() as i32).collect();
    let refused = report["refused"].as_u64().unwrap();
    assert_eq!(pids.len() as u64 + refused, 200);
    eprintln!("max_procs {max_procs}: {} grandchildren started, {refused} refused", pids.len());
    if uid == 0 {
        skip("RLIMIT_NPROC is not enforced for root: not asserting that --max-procs refused grandchildren");
    } else {
        assert!(refused > 0, "max_procs {max_procs} refused none of 200 grandchildren");
        assert!((pids.len() as u64) < 200);
    }
    close_and_check_gone(peer);
    for pid in pids {
        assert!(is_dead(pid), "grandchild {pid} outlived the plugin");
    }
    fresh_plugin_answers(sandbox);
}

#[test]
fn node_permission_refuses_reading_etc_passwd_and_files_outside_the_plugins_directory() {
    let unconfined = plugin(options(Sandbox::default()));
    // The control: without the permission model, the same request reads the file.
    assert!(request(&unconfined, "read", json!("/etc/passwd")).unwrap().data.as_json().is_some());
    close_and_check_gone(unconfined);

    let confined = || {
        let mut command = NodePermission::default().command("node", hostile()).unwrap();
        Peer::spawn(&mut command, options(Sandbox::default())).unwrap()
    };
    let peer = confined();
    let outside = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    for path in [Path::new("/etc/passwd"), outside.as_path()] {
        let error = request(&peer, "read", json!(path)).unwrap_err();
        assert_eq!(error.code(), ErrorCode::ErrorReply, "{error}");
        let text = error.reply().unwrap().data.as_str().unwrap().to_owned();
        assert!(text.starts_with("ERR_ACCESS_DENIED: "), "{path:?}: {text}");
    }
    // Its own directory stays readable.
    let own = std::fs::read_to_string(hostile()).unwrap().len();
    assert_eq!(request(&peer, "read", json!(hostile())).unwrap().data, json!(own).into());
    close_and_check_gone(peer);

    let again = confined();
    assert_eq!(request(&again, "echo", json!("ok")).unwrap().data.as_str(), Some("ok"));
    close_and_check_gone(again);
}

/// Puts the fake secret in this test process's environment, once, before any child sees it.
fn hold_secret() {
    static ONCE: Once = Once::new();
    // Safe in edition 2021; std's Command reads the environment under the same lock.
    ONCE.call_once(|| std::env::set_var(SECRET_NAME, SECRET));
}

#[test]
fn a_cleared_environment_keeps_the_hosts_secret_from_the_plugin() {
    hold_secret();
    let seen = |sandbox: Sandbox| {
        let peer = plugin(options(sandbox));
        let secret = request(&peer, "env", json!(SECRET_NAME)).unwrap().data;
        let path = request(&peer, "env", json!("PATH")).unwrap().data;
        close_and_check_gone(peer);
        (secret, path.as_str().is_some())
    };
    // The control: inherited by default.
    assert_eq!(seen(Sandbox::default()), (json!(SECRET).into(), true));
    let cleared = Sandbox { clear_env: true, ..Sandbox::default() };
    assert_eq!(seen(cleared.clone()), (json!(null).into(), true));
    let allowed = Sandbox { env_allow: vec![SECRET_NAME.to_owned()], ..cleared };
    assert_eq!(seen(allowed), (json!(SECRET).into(), true));
}

#[test]
fn a_flood_of_unsolicited_messages_is_dropped_past_the_cap_and_the_plugin_still_answers() {
    let peer = plugin(PeerOptions { max_unsolicited: 16, ..options(Sandbox::default()) });
    let reply = request(&peer, "flood", json!(100_000)).unwrap();
    assert_eq!(reply.data.as_str(), Some("flooded"));
    let stats = peer.stats();
    assert_eq!((stats.unsolicited, stats.unsolicited_dropped), (16, 99_984));
    assert_eq!(request(&peer, "echo", json!("after")).unwrap().data.as_str(), Some("after"));
    close_and_check_gone(peer);
}

#[test]
fn a_sandbox_that_cannot_be_applied_fails_the_spawn_with_invalid_argument() {
    let sandbox = limited(ChildLimits { max_open_files: Some(0), ..ChildLimits::default() });
    let error = Peer::spawn(Command::new("node").arg(hostile()), options(sandbox)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert_eq!(error.message(), "ChildLimits::max_open_files (--max-open-files) must be at least 1 (got 0)");
}

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("demo").args(args).output().unwrap()
}

#[test]
fn the_demo_under_every_sandbox_flag_prints_the_seed_conversation() {
    let Some(_) = ts_child() else { return };
    // As many as this process may have: a limit in force that the user's processes fit under.
    let (_, procs) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC).unwrap();
    let procs = procs.min(1 << 20).to_string();
    let out = demo(&[
        "--clear-env",
        "--env-allow",
        "HOME",
        "--cwd",
        "/",
        "--max-memory-mb",
        "4096",
        "--max-cpu-s",
        "60",
        "--max-procs",
        &procs,
        "--max-open-files",
        "256",
        "--node-permission",
    ]);
    let expected =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seed-output.txt")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
}

#[test]
fn the_demo_names_the_cpu_limit_that_killed_its_child() {
    let out = demo(&["--max-cpu-s", "1", "--", "node", "-e", "for (;;);"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "rust-ts-ipc: child `node -e for (;;);` was killed by signal: 24 (SIGXCPU): it exceeded its CPU time limit \
             of 1 s"
        ),
        "{stderr}"
    );
}

#[test]
fn the_demo_names_the_memory_limit_under_which_its_child_died() {
    let out =
        demo(&["--max-memory-mb", "1024", "--", "node", "-e", "const k = []; for (;;) k.push(Buffer.alloc(1 << 24));"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it died of an allocation failure with a memory limit of 1024 MiB"), "{stderr}");
}

#[test]
fn the_demo_names_the_open_files_limit_its_child_could_not_start_under() {
    // With stdin, stdout and stderr open, the dynamic loader cannot open libc: it says
    // "Error 24" (EMFILE's number) and the child exits 127. That used to be left unexplained.
    let out = demo(&["--max-open-files", "3", "--", "sh", "-c", "true"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it ran out of file descriptors with a limit of 3 open files (RLIMIT_NOFILE"), "{stderr}");
}

#[test]
fn the_demos_native_engine_under_node_permission_says_it_needs_node_allow_addons() {
    let Some(script) = ts_child() else { return };
    let repo = env!("CARGO_MANIFEST_DIR");
    if !std::fs::read_dir(Path::new(repo).join("native"))
        .unwrap()
        .flatten()
        .any(|e| e.path().extension() == Some("node".as_ref()))
    {
        return skip("the native addon is not built (npm run build -w native)");
    }
    let native = format!("{repo}/native");
    let script = script.to_str().unwrap();
    let refused =
        demo(&["--node-permission", "--node-allow-read", &native, "--", "node", script, "--engine", "native"]);
    assert_eq!(refused.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("its stderr says: `ts-app: cannot load the native addon from ")
            && stderr.contains("Node's permission model forbids native addons: start node with --allow-addons"),
        "{stderr}"
    );
    let allowed = demo(&[
        "--node-permission",
        "--node-allow-read",
        &native,
        "--node-allow-addons",
        "--",
        "node",
        script,
        "--engine",
        "native",
    ]);
    let expected = std::fs::read_to_string(Path::new(repo).join("tests/seed-output.txt")).unwrap();
    assert_eq!(String::from_utf8_lossy(&allowed.stdout), expected, "{}", String::from_utf8_lossy(&allowed.stderr));
}

#[test]
fn the_demo_bounds_a_reply_line_by_max_line_bytes() {
    let Some(_) = ts_child() else { return };
    // The greeting's reply is a 55-byte line.
    let out = demo(&["--max-line-bytes", "40"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "rust-ts-ipc: child wrote non-protocol output: line 1: line of 55 bytes exceeds the 40-byte limit"
        ),
        "{stderr}"
    );
    let zero = demo(&["--max-line-bytes", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--max-line-bytes must be at least 1 (got 0)"));
}

#[test]
fn the_demo_refuses_sandbox_flags_it_cannot_honour() {
    let not_node = demo(&["--node-permission", "--", "sh", "-c", "true"]);
    assert_eq!(not_node.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_node.stderr)
        .contains("--node-permission applies to a Node child, but PROGRAM is `sh`: run `-- node SCRIPT ...`"));
    let zero = demo(&["--max-cpu-s", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr)
        .contains("ChildLimits::max_cpu_s (--max-cpu-s) must be at least 1 (got 0)"));
    // RLIM_INFINITY (2^64 - 1) is no limit at all: `--max-cpu-s 18446744073709551615` ran the
    // child without one, and 18446744073709551614 left it without the SIGKILL a second later.
    for value in ["18446744073709551615", "18446744073709551614"] {
        let endless = demo(&["--max-cpu-s", value]);
        assert_eq!(endless.status.code(), Some(2), "{value}: {endless:?}");
        assert!(
            String::from_utf8_lossy(&endless.stderr).contains(&format!(
                "ChildLimits::max_cpu_s (--max-cpu-s) {value} is too large: the OS reads it as no limit at all"
            )),
            "{endless:?}"
        );
    }
    let loose = demo(&["--node-allow-addons"]);
    assert_eq!(loose.status.code(), Some(2));
    // A bad flag value is a usage error (2), not a child that could not start (3).
    let comma = demo(&["--node-permission", "--node-allow-read", "/tmp/a,b"]);
    assert_eq!(comma.status.code(), Some(2), "{comma:?}");
    assert!(String::from_utf8_lossy(&comma.stderr)
        .contains("cannot allow reading `/tmp/a,b`: Node splits --allow-fs-read at commas; use a path without one"));
    let no_dir = demo(&["--cwd", "/no/such/dir"]);
    assert_eq!(no_dir.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_dir.stderr)
        .contains("cannot start the child in `/no/such/dir`: it is not a directory"));
}

#[test]
fn the_demo_runs_its_child_under_bubblewrap_as_the_readme_shows() {
    let Some(script) = ts_child() else { return };
    let usable =
        Command::new("bwrap").args(["--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"]).output();
    if !usable.is_ok_and(|out| out.status.success()) {
        return skip("bubblewrap (`bwrap`) is not installed, or cannot create namespaces here");
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let (app, modules) = (format!("{repo}/ts-app"), format!("{repo}/node_modules"));
    #[rustfmt::skip]
    let out = demo(&[
        "--clear-env", "--max-cpu-s", "60", "--",
        "bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--ro-bind", &app, &app, "--ro-bind", &modules, &modules,
        "--unshare-all", "--die-with-parent", "--new-session",
        "node", script.to_str().unwrap(),
    ]);
    let expected = std::fs::read_to_string(Path::new(repo).join("tests/seed-output.txt")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
}

#[test]
fn a_cleared_environment_does_not_hide_the_hosts_own_environment_in_proc_but_node_permission_does() {
    // A documented limit (README "Threat model"): the plugin runs as the host's user, so it
    // can read `/proc/<host pid>/environ`, the environment the host was started with, however
    // cleared its own is. Node's permission model refuses that read.
    let ours = std::fs::read("/proc/self/environ").unwrap();
    let first = ours.split(|&b| b == 0).find(|entry| !entry.is_empty()).expect("this process has an environment");
    let needle = String::from_utf8_lossy(first).into_owned();
    let environ = format!("/proc/{}/environ", std::process::id());
    let ask = json!({ "path": environ, "needle": needle });
    let cleared = Sandbox { clear_env: true, ..Sandbox::default() };

    let peer = plugin(options(cleared.clone()));
    assert_eq!(request(&peer, "holds", ask.clone()).unwrap().data, json!(true).into());
    close_and_check_gone(peer);

    let mut command = NodePermission::default().command("node", hostile()).unwrap();
    let peer = Peer::spawn(&mut command, options(cleared)).unwrap();
    let error = request(&peer, "holds", ask).unwrap_err();
    let text = error.reply().unwrap().data.as_str().unwrap().to_owned();
    assert!(text.starts_with("ERR_ACCESS_DENIED: "), "{text}");
    close_and_check_gone(peer);
}

#[test]
fn node_permission_follows_a_symlink_in_the_plugins_directory_to_a_file_outside_it() {
    // A documented limit of Node's permission model (README "Threat model"; Node's docs:
    // "symbolic links will be followed even to locations outside of the set of paths that
    // access has been granted to"): a plugin directory shipped with a symlink reads through it.
    let dir = std::env::temp_dir().join(format!("rust-ts-ipc-symlink-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let script = dir.join("hostile.mjs");
    std::fs::copy(hostile(), &script).unwrap();
    let outside = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
    let mut command = NodePermission::default().command("node", &script).unwrap();
    let peer = Peer::spawn(&mut command, options(Sandbox::default())).unwrap();
    let direct = request(&peer, "read", json!(outside)).unwrap_err();
    assert!(direct.reply().unwrap().data.as_str().unwrap().starts_with("ERR_ACCESS_DENIED: "), "{direct}");
    let through = request(&peer, "read", json!(dir.join("link"))).unwrap();
    let length = std::fs::read_to_string(&outside).unwrap().chars().count();
    assert_eq!(through.data, json!(length).into());
    close_and_check_gone(peer);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_hosts_node_options_do_not_widen_the_node_permission_model() {
    // NODE_OPTIONS is read by the child's `node` as flags: `--allow-fs-read=/` in the host's
    // environment undid --node-permission's allow-list (and `--require` ran a preload in it).
    if ts_child().is_none() {
        return;
    }
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node-options-probe.cjs");
    let run = |args: &[&str], node_options: String| {
        Command::new(BIN).arg("demo").args(args).env("NODE_OPTIONS", node_options).output().unwrap()
    };
    // The control: without the permission model the host's NODE_OPTIONS reach the child.
    let open = run(&[], format!("--require {}", probe.display()));
    assert!(open.status.success(), "{open:?}");
    assert!(String::from_utf8_lossy(&open.stderr).contains("probe ran: /etc/passwd readable=true"), "{open:?}");
    let confined = run(&["--node-permission"], format!("--allow-fs-read=/ --require {}", probe.display()));
    assert!(confined.status.success(), "{confined:?}");
    let stderr = String::from_utf8_lossy(&confined.stderr);
    assert!(!stderr.contains("probe ran"), "NODE_OPTIONS reached the confined child: {stderr}");
    assert_eq!(String::from_utf8_lossy(&confined.stdout), include_str!("seed-output.txt"));
}

#[test]
fn node_permission_runs_the_script_it_allowed_even_from_another_working_directory() {
    // The allow-list is worked out from the script's path as this process sees it; the child
    // resolved a relative script from its own working directory (`Sandbox::cwd`) instead, a
    // different file or none (it died before its first request).
    let mut command = NodePermission::default().command("node", "tests/fixtures/hostile.mjs").unwrap();
    let peer = Peer::spawn(&mut command, options(Sandbox { cwd: Some("/".into()), ..Sandbox::default() })).unwrap();
    assert_eq!(request(&peer, "echo", json!("from /")).unwrap().data.as_str(), Some("from /"));
    close_and_check_gone(peer);
}
