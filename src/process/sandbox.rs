//! Starting an untrusted child with less: its environment cleared except an allowlist, a
//! working directory of the caller's choosing, resource limits set between fork and exec
//! (address space, CPU seconds, processes, open files), and for a Node child, Node's
//! permission model ([`NodePermission`]). Used by [`crate::Peer`] (`PeerOptions::sandbox`) and
//! by the demo's `--clear-env`, `--cwd`, `--max-*` and `--node-permission` flags.
//!
//! These are limits, not isolation: they bound what a misbehaving plugin costs (memory, CPU,
//! processes, descriptors, secrets in the environment, files Node lets it read), but a child
//! still shares the kernel, the network and the user's file permissions. README "Threat
//! model" says what they stop and what they do not, and how to run the child under
//! bubblewrap or nsjail for more.
//!
//! ```no_run
//! use rust_ts_ipc::process::sandbox::{ChildLimits, NodePermission, Sandbox};
//! use rust_ts_ipc::{Peer, PeerOptions};
//!
//! // `node --experimental-permission --allow-fs-read=/srv/plugins/md/ ... /srv/plugins/md/main.js`
//! let mut command = NodePermission::default().command("node", "/srv/plugins/md/main.js")?;
//! let sandbox = Sandbox {
//!     clear_env: true,
//!     env_allow: vec!["LANG".into()],
//!     cwd: Some("/srv/plugins/md".into()),
//!     limits: ChildLimits {
//!         max_memory_mb: Some(2048),
//!         max_cpu_s: Some(60),
//!         max_open_files: Some(64),
//!         ..ChildLimits::default()
//!     },
//! };
//! let peer = Peer::spawn(&mut command, PeerOptions { sandbox, ..PeerOptions::default() })?;
//! let html = peer.request("markdown", "# hi")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! When a child dies, [`ChildLimits::explain`] names the limit that killed it, but only where
//! the evidence proves it: SIGXCPU (or SIGKILL with its CPU time past the limit) for
//! [`ChildLimits::max_cpu_s`]; an allocation failure on its stderr while
//! [`ChildLimits::max_memory_mb`] was in force; `EMFILE` while
//! [`ChildLimits::max_open_files`] was.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Resource limits for a child, applied before it runs its first instruction (between fork
/// and exec), so nothing it does can run ahead of them. `None`: inherited from this process.
/// Soft and hard limits are set alike, except CPU time (see [`max_cpu_s`](Self::max_cpu_s)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildLimits {
    /// The child's address space in MiB (`RLIMIT_AS`): allocations past it fail. Counts
    /// reserved virtual memory, not resident memory: Node reserves about 800 MiB before it
    /// runs a line of JavaScript (V8's code range and heap cages), so a Node child needs
    /// about 1024 or more.
    pub max_memory_mb: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`, user + system): at this many the kernel sends SIGXCPU, which
    /// ends the child unless it handles the signal; one second later (the hard limit) SIGKILL.
    pub max_cpu_s: Option<u64>,
    /// Processes and threads (`RLIMIT_NPROC`). The kernel counts every process and thread of
    /// the child's real user id, not only the child's own, and does not enforce it for root
    /// (or with `CAP_SYS_RESOURCE`). Node itself runs about ten threads.
    pub max_procs: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`): the highest descriptor number plus one. Node
    /// needs about 20 to start.
    pub max_open_files: Option<u64>,
}

/// How a child is started: what it inherits of our environment, where it runs, and its
/// [`ChildLimits`]. The default changes nothing (the child inherits everything, as
/// `Command` does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Start the child with an empty environment except `PATH` and the variables named in
    /// [`env_allow`](Self::env_allow) (copied from this process, where set). Variables set
    /// on the `Command` itself (`Command::env`) are kept: they are the caller's choice.
    pub clear_env: bool,
    /// With [`clear_env`](Self::clear_env): the variables the child still inherits, besides `PATH`.
    pub env_allow: Vec<String>,
    /// The child's working directory. Give the program and its script as absolute paths: a
    /// relative one may be looked up from here.
    pub cwd: Option<PathBuf>,
    /// The resource limits.
    pub limits: ChildLimits,
}

/// A [`Sandbox`] or [`NodePermission`] that cannot be applied, with what to change.
#[derive(Debug)]
pub struct SandboxError {
    message: String,
}

impl SandboxError {
    fn new(message: impl Into<String>) -> Self {
        SandboxError { message: message.into() }
    }
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SandboxError {}

impl Sandbox {
    /// Whether it changes nothing about how a child starts.
    pub fn is_unrestricted(&self) -> bool {
        *self == Sandbox::default()
    }

    /// Sets up `command` to start under this sandbox: environment, working directory and
    /// limits. Call it before every spawn (applying it twice is harmless).
    ///
    /// # Errors
    /// An allowlisted name that is empty or holds `=` or NUL; a working directory that is not
    /// a directory; a limit of 0, or above what this process may grant (its own hard limit).
    pub fn apply(&self, command: &mut Command) -> Result<(), SandboxError> {
        if self.clear_env {
            let kept: Vec<(OsString, OsString)> =
                command.get_envs().filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned()))).collect();
            command.env_clear();
            for name in std::iter::once("PATH").chain(self.env_allow.iter().map(String::as_str)) {
                if name.is_empty() || name.contains(['=', '\0']) {
                    return Err(SandboxError::new(format!(
                        "cannot allow environment variable `{}`: a name must be non-empty, without `=` or NUL",
                        name.escape_debug()
                    )));
                }
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
            command.envs(kept);
        } else if !self.env_allow.is_empty() {
            return Err(SandboxError::new(
                "an environment allowlist was given without clearing the environment: set clear_env (--clear-env), \
                 or the child inherits every variable anyway",
            ));
        }
        if let Some(dir) = &self.cwd {
            if !dir.is_dir() {
                return Err(SandboxError::new(format!(
                    "cannot start the child in `{}`: it is not a directory",
                    dir.display()
                )));
            }
            command.current_dir(dir);
        }
        sys::set_limits(command, &self.limits)
    }
}

impl ChildLimits {
    /// Whether no limit is set.
    pub fn is_none(&self) -> bool {
        *self == ChildLimits::default()
    }

    /// Why a child under these limits died, when the evidence proves a limit did it: killed
    /// by SIGXCPU with a CPU limit set, or by SIGKILL with `cpu_time` (what it had used,
    /// read before it was reaped) at or past the limit; failed with an allocation failure
    /// on its stderr (`stderr_tail`) with a memory limit set; failed with `EMFILE` on its
    /// stderr with an open-files limit set. `None` otherwise, or for a clean exit. The text
    /// follows "child `COMMAND` was killed by ...: ".
    pub fn explain(&self, status: Option<ExitStatus>, cpu_time: Option<Duration>, stderr_tail: &str) -> Option<String> {
        let status = status?;
        if status.success() {
            return None;
        }
        if let Some(limit) = self.max_cpu_s {
            let hard_kill = sys::killed_by_sigkill(status) && cpu_time.is_some_and(|t| t.as_secs() >= limit);
            if sys::killed_by_sigxcpu(status) || hard_kill {
                return Some(format!(
                    "it exceeded its CPU time limit of {limit} s (RLIMIT_CPU; raise --max-cpu-s / \
                     ChildLimits::max_cpu_s if the work is legitimate)"
                ));
            }
        }
        let tail = stderr_tail.to_ascii_lowercase();
        if let Some(limit) = self.max_memory_mb {
            const MARKERS: [&str; 6] = [
                "allocation failed",
                "out of memory",
                "cannot allocate memory",
                "bad_alloc",
                "memory allocation of",
                "fatal process oom",
            ];
            if MARKERS.iter().any(|m| tail.contains(m)) {
                return Some(format!(
                    "it died of an allocation failure with a memory limit of {limit} MiB (RLIMIT_AS, address space; a \
                     Node child needs about 1024 MiB to start; raise --max-memory-mb / ChildLimits::max_memory_mb if \
                     the work is legitimate)"
                ));
            }
        }
        if let Some(limit) = self.max_open_files {
            // Node's `EMFILE`, strerror's text (perror, most C programs), and the dynamic
            // loader's `Error 24` (EMFILE's number; it cannot even load a library).
            let errno_24 = tail
                .match_indices("error 24")
                .any(|(at, m)| !tail[at + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
            if tail.contains("emfile") || tail.contains("too many open files") || errno_24 {
                return Some(format!(
                    "it ran out of file descriptors with a limit of {limit} open files (RLIMIT_NOFILE; raise \
                     --max-open-files / ChildLimits::max_open_files if the work is legitimate)"
                ));
            }
        }
        None
    }
}

/// How much CPU time (user + system) child `pid` has used, read while it is not yet reaped
/// (running or a zombie); `None` where the OS does not say (not Linux, or already reaped).
pub fn cpu_time_unreaped(pid: u32) -> Option<Duration> {
    sys::cpu_time(pid)
}

/// Node's permission model for a Node child: file reads only under an allow-list, no file
/// writes, no child processes, no worker threads, no WASI, and native addons only when
/// [`allow_addons`](Self::allow_addons) is set. Build the child's command with
/// [`command`](Self::command), then spawn it as usual (under a [`Sandbox`] too, if wanted).
///
/// Node 20 to 22.12 spell the switch `--experimental-permission`, Node 22.13 and later
/// `--permission`; [`permission_flag`] asks the installed `node` which it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePermission {
    /// Where the child may read (directories and everything under them, or single files).
    /// Empty: [`default_reads`](Self::default_reads) of the script. Non-empty: exactly these,
    /// which must include the script (extend `default_reads` to keep it).
    pub allow_read: Vec<PathBuf>,
    /// Let the child load native addons (`--allow-addons`): an addon is native code, which
    /// the permission model cannot confine. `--engine native` needs it.
    pub allow_addons: bool,
}

impl NodePermission {
    /// What a child running `script` may read by default: the script's directory, and the
    /// `node_modules` directories Node's resolution looks in from there (in the script's
    /// directory and in each of its parents) that exist.
    ///
    /// # Errors
    /// When the script's absolute path cannot be found (it does not exist).
    pub fn default_reads(script: &Path) -> Result<Vec<PathBuf>, SandboxError> {
        let script = std::fs::canonicalize(script).map_err(|e| {
            SandboxError::new(format!(
                "cannot find the child script `{}` to allow its directory: {e}",
                script.display()
            ))
        })?;
        let Some(dir) = script.parent() else {
            return Err(SandboxError::new(format!("the child script `{}` has no directory", script.display())));
        };
        let mut reads = vec![dir.to_path_buf()];
        reads.extend(dir.ancestors().map(|d| d.join("node_modules")).filter(|d| d.is_dir()));
        Ok(reads)
    }

    /// The arguments that put a child of `node` under this permission model, to go before the
    /// script: the switch ([`permission_flag`]), one `--allow-fs-read` per allowed path, and
    /// `--allow-addons` if asked for.
    ///
    /// # Errors
    /// As [`default_reads`](Self::default_reads) and [`permission_flag`]; a path holding a
    /// comma (Node 20 would split it into two grants).
    pub fn args(&self, node: &OsStr, script: &Path) -> Result<Vec<OsString>, SandboxError> {
        let reads = if self.allow_read.is_empty() { Self::default_reads(script)? } else { self.allow_read.clone() };
        let mut args = vec![OsString::from(permission_flag(node)?)];
        for path in reads {
            // Node 20 reads `--allow-fs-read=a,b` as two paths: a comma would widen the grant.
            if path.as_os_str().to_string_lossy().contains(',') {
                return Err(SandboxError::new(format!(
                    "cannot allow reading `{}`: Node splits --allow-fs-read at commas; use a path without one",
                    path.display()
                )));
            }
            let mut arg = OsString::from("--allow-fs-read=");
            arg.push(path.as_os_str());
            // A directory grants what is under it; the separator keeps `/a/b` from granting `/a/bc`.
            if path.is_dir() && !path.as_os_str().to_string_lossy().ends_with('/') {
                arg.push("/");
            }
            args.push(arg);
        }
        if self.allow_addons {
            args.push("--allow-addons".into());
        }
        Ok(args)
    }

    /// `node <permission flags> script` (the script's absolute path, so that a working
    /// directory of its own does not change which script runs), without this process's `NODE_OPTIONS`
    /// ([`keep_node_options_out`](Self::keep_node_options_out)): add the script's own
    /// arguments, a [`Sandbox`], and spawn it (with [`crate::Peer::spawn`], say).
    ///
    /// # Errors
    /// As [`args`](Self::args).
    pub fn command(&self, node: impl AsRef<OsStr>, script: impl AsRef<Path>) -> Result<Command, SandboxError> {
        let node = node.as_ref();
        // Absolute: the script the child runs is the one its reads were allowed for, whatever
        // its working directory ([`Sandbox::cwd`]).
        let script = std::fs::canonicalize(script.as_ref()).map_err(|e| {
            SandboxError::new(format!("cannot find the child script `{}`: {e}", script.as_ref().display()))
        })?;
        let mut command = Command::new(node);
        command.args(self.args(node, &script)?).arg(&script);
        Self::keep_node_options_out(&mut command);
        Ok(command)
    }

    /// Keeps this process's `NODE_OPTIONS` from the child: `node` reads it as more flags, so
    /// an `--allow-fs-read=/` or `--allow-child-process` there would widen the permission
    /// model, and a `--require` would run a preload in the child. [`command`](Self::command)
    /// does it; a command built from [`args`](Self::args) needs it too. A `NODE_OPTIONS` set
    /// on the command afterwards (`Command::env`), or named in [`Sandbox::env_allow`], is the
    /// caller's choice and reaches the child.
    pub fn keep_node_options_out(command: &mut Command) {
        command.env_remove("NODE_OPTIONS");
    }
}

/// The switch that turns on Node's permission model for `node` (a program name looked up on
/// `PATH`, or a path): `--permission` (Node 22.13 and later) or `--experimental-permission`
/// (Node 20 to 22.12), found by running `node FLAG -e 0` with each, once per `node` per
/// process (the answer is cached).
///
/// # Errors
/// When `node` accepts neither (older than 20, or not Node), or cannot be run.
pub fn permission_flag(node: &OsStr) -> Result<&'static str, SandboxError> {
    static KNOWN: OnceLock<Mutex<HashMap<OsString, &'static str>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Mutex::default);
    if let Some(flag) = known.lock().unwrap_or_else(PoisonError::into_inner).get(node) {
        return Ok(flag);
    }
    for flag in ["--permission", "--experimental-permission"] {
        let status = Command::new(node)
            .args([flag, "-e", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| {
                SandboxError::new(format!("cannot run `{}` to find its permission flag: {e}", node.to_string_lossy()))
            })?;
        if status.success() {
            known.lock().unwrap_or_else(PoisonError::into_inner).insert(node.to_owned(), flag);
            return Ok(flag);
        }
    }
    Err(SandboxError::new(format!(
        "`{}` accepts neither --permission nor --experimental-permission: Node's permission model needs Node 20 or \
         later",
        node.to_string_lossy()
    )))
}

#[cfg(unix)]
mod sys {
    use std::io;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, ExitStatus};
    use std::time::Duration;

    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use nix::sys::signal::Signal;

    use super::{ChildLimits, SandboxError};

    /// One limit to set in the child: resource, soft, hard.
    type Limit = (Resource, u64, u64);

    pub fn set_limits(command: &mut Command, limits: &ChildLimits) -> Result<(), SandboxError> {
        let wanted = [
            ("max_memory_mb (--max-memory-mb)", Resource::RLIMIT_AS, limits.max_memory_mb, 1u64 << 20, 0),
            // The hard limit a second later: SIGXCPU first, which a child may catch, then SIGKILL.
            ("max_cpu_s (--max-cpu-s)", Resource::RLIMIT_CPU, limits.max_cpu_s, 1, 1),
            ("max_procs (--max-procs)", Resource::RLIMIT_NPROC, limits.max_procs, 1, 0),
            ("max_open_files (--max-open-files)", Resource::RLIMIT_NOFILE, limits.max_open_files, 1, 0),
        ];
        let mut set: [Option<Limit>; 4] = [None; 4];
        for (slot, (name, resource, value, unit, extra)) in set.iter_mut().zip(wanted) {
            let Some(value) = value else { continue };
            if value == 0 {
                return Err(SandboxError::new(format!("ChildLimits::{name} must be at least 1 (got 0)")));
            }
            let soft = value
                .checked_mul(unit)
                .ok_or_else(|| SandboxError::new(format!("ChildLimits::{name} {value} is too large")))?;
            let hard = soft.saturating_add(extra);
            // `>=`: RLIM_INFINITY is u64::MAX on Linux (where clippy sees `==`), 2^63 - 1 on macOS.
            #[allow(clippy::absurd_extreme_comparisons)]
            let endless = hard >= nix::libc::RLIM_INFINITY;
            if endless {
                return Err(SandboxError::new(format!(
                    "ChildLimits::{name} {value} is too large: the OS reads it as no limit at all; leave the limit \
                     unset for none, or choose a lower value"
                )));
            }
            // Raising a hard limit needs CAP_SYS_RESOURCE (which even root may lack in a
            // container): refuse here, naming the limit, rather than fail in the child.
            if let Ok((_, ours)) = getrlimit(resource) {
                if hard > ours {
                    return Err(SandboxError::new(format!(
                        "ChildLimits::{name} {value} is above this process's own hard limit ({ours} in the \
                         resource's units, which only a privileged process may raise); choose a lower value"
                    )));
                }
            }
            *slot = Some((resource, soft, hard));
        }
        if set.iter().any(Option::is_some) {
            limit_before_exec(command, set);
        }
        Ok(())
    }

    /// The one `unsafe` of the crate: `Command::pre_exec`, the only way std offers to run
    /// code in the child before exec, which is where resource limits must be set (set after
    /// spawn, the child would already be running without them).
    #[allow(unsafe_code)]
    fn limit_before_exec(command: &mut Command, limits: [Option<Limit>; 4]) {
        let set_all = move || -> io::Result<()> {
            for &(resource, soft, hard) in limits.iter().flatten() {
                setrlimit(resource, soft, hard).map_err(|errno| io::Error::from_raw_os_error(errno as i32))?;
            }
            Ok(())
        };
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are sound (another thread of ours may have held the
        // allocator's lock at the fork). It reads a fixed-size array it owns (copied in
        // before the fork), calls setrlimit (a direct system call, async-signal-safe), and
        // on failure builds an `io::Error` from the errno, which does not allocate; it takes
        // no lock and touches no other state. std sends that error to the parent as the
        // spawn's error.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(command, set_all);
        }
    }

    pub fn killed_by_sigxcpu(status: ExitStatus) -> bool {
        status.signal() == Some(Signal::SIGXCPU as i32)
    }

    pub fn killed_by_sigkill(status: ExitStatus) -> bool {
        status.signal() == Some(Signal::SIGKILL as i32)
    }

    /// utime + stime from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
    #[cfg(target_os = "linux")]
    pub fn cpu_time(pid: u32) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let mut fields = rest.split(' ').skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
        let total = utime + stime;
        Some(Duration::from_secs(total / ticks) + Duration::from_nanos((total % ticks) * 1_000_000_000 / ticks))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn cpu_time(_pid: u32) -> Option<Duration> {
        None
    }
}

/// Elsewhere: no resource limits to set; asking for one is an error, never silently ignored.
#[cfg(not(unix))]
mod sys {
    use std::process::{Command, ExitStatus};
    use std::time::Duration;

    use super::{ChildLimits, SandboxError};

    pub fn set_limits(_command: &mut Command, limits: &ChildLimits) -> Result<(), SandboxError> {
        if limits.is_none() {
            Ok(())
        } else {
            Err(SandboxError::new("resource limits (ChildLimits) are only supported on Unix"))
        }
    }

    pub fn killed_by_sigxcpu(_status: ExitStatus) -> bool {
        false
    }

    pub fn killed_by_sigkill(_status: ExitStatus) -> bool {
        false
    }

    pub fn cpu_time(_pid: u32) -> Option<Duration> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn output(sandbox: &Sandbox, script: &str) -> String {
        let mut command = Command::new("sh");
        command.args(["-c", script]).env("SET_BY_CALLER", "kept");
        sandbox.apply(&mut command).unwrap();
        let out = command.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn limits_are_in_force_in_the_child_from_its_first_instruction() {
        let limits = ChildLimits {
            max_memory_mb: Some(3000),
            max_cpu_s: Some(7),
            max_procs: Some(4000),
            max_open_files: Some(64),
        };
        let sandbox = Sandbox { limits, ..Sandbox::default() };
        // Read by the kernel's own account of the child's limits (columns: soft, hard).
        let shown = output(
            &sandbox,
            "grep -E '^Max (address space|cpu time|processes|open files)' /proc/self/limits | tr -s ' ' | cut -d' ' -f3-5",
        );
        let bytes = 3000u64 << 20;
        let expected = format!("time 7 8\n4000 4000 processes\nfiles 64 64\nspace {bytes} {bytes}\n");
        assert_eq!(shown, expected);
    }

    #[test]
    fn a_cleared_environment_keeps_path_the_allowlist_and_what_the_caller_set() {
        let sandbox = Sandbox { clear_env: true, env_allow: vec!["HOME".into()], ..Sandbox::default() };
        let shown = output(&sandbox, "env | cut -d= -f1 | grep -v '^PWD$' | sort | tr '\\n' ' '");
        let mut expected: Vec<&str> = vec!["PATH", "SET_BY_CALLER"];
        if std::env::var_os("HOME").is_some() {
            expected.push("HOME");
        }
        // `sh` may add a few of its own (SHLVL, _).
        let shown: Vec<&str> = shown.split_whitespace().filter(|n| !["SHLVL", "_", "OLDPWD"].contains(n)).collect();
        expected.sort_unstable();
        assert_eq!(shown, expected);
    }

    #[test]
    fn the_working_directory_is_set_and_a_missing_one_is_named() {
        let sandbox = Sandbox { cwd: Some("/".into()), ..Sandbox::default() };
        assert_eq!(output(&sandbox, "pwd"), "/\n");
        let missing = Sandbox { cwd: Some("/no/such/dir".into()), ..Sandbox::default() };
        let e = missing.apply(&mut Command::new("true")).unwrap_err();
        assert_eq!(e.to_string(), "cannot start the child in `/no/such/dir`: it is not a directory");
    }

    #[test]
    fn bad_settings_are_refused_with_the_value() {
        let zero =
            Sandbox { limits: ChildLimits { max_cpu_s: Some(0), ..ChildLimits::default() }, ..Sandbox::default() };
        assert_eq!(
            zero.apply(&mut Command::new("true")).unwrap_err().to_string(),
            "ChildLimits::max_cpu_s (--max-cpu-s) must be at least 1 (got 0)"
        );
        let endless = Sandbox {
            limits: ChildLimits { max_cpu_s: Some(u64::MAX - 1), ..ChildLimits::default() },
            ..Sandbox::default()
        };
        assert!(endless
            .apply(&mut Command::new("true"))
            .unwrap_err()
            .to_string()
            .starts_with("ChildLimits::max_cpu_s (--max-cpu-s) 18446744073709551614 is too large: the OS reads it"));
        let bad = Sandbox { clear_env: true, env_allow: vec!["A=B".into()], ..Sandbox::default() };
        assert_eq!(
            bad.apply(&mut Command::new("true")).unwrap_err().to_string(),
            "cannot allow environment variable `A=B`: a name must be non-empty, without `=` or NUL"
        );
        let loose = Sandbox { env_allow: vec!["HOME".into()], ..Sandbox::default() };
        assert!(loose.apply(&mut Command::new("true")).unwrap_err().to_string().contains("set clear_env"));
    }

    #[test]
    fn explain_names_a_limit_only_on_evidence() {
        let limits = ChildLimits { max_cpu_s: Some(2), max_memory_mb: Some(1024), ..ChildLimits::default() };
        let signal = |n: i32| Some(ExitStatus::from_raw(n));
        let code = |n: i32| Some(ExitStatus::from_raw(n << 8));
        let cpu = limits.explain(signal(24), None, "").unwrap();
        assert!(cpu.starts_with("it exceeded its CPU time limit of 2 s (RLIMIT_CPU"), "{cpu}");
        // SIGKILL: the CPU limit only with the CPU time to prove it.
        assert!(limits.explain(signal(9), Some(Duration::from_millis(2010)), "").unwrap().contains("CPU time limit"));
        assert_eq!(limits.explain(signal(9), Some(Duration::from_millis(300)), ""), None);
        assert_eq!(limits.explain(signal(9), None, ""), None);
        let oom = "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory";
        let memory = limits.explain(signal(6), None, oom).unwrap();
        assert!(memory.starts_with("it died of an allocation failure with a memory limit of 1024 MiB"), "{memory}");
        assert!(limits.explain(code(1), None, "RangeError: Array buffer allocation failed").is_some());
        assert_eq!(limits.explain(code(1), None, "TypeError: x is not a function"), None);
        assert_eq!(ChildLimits::default().explain(signal(24), None, oom), None);
        assert_eq!(limits.explain(code(0), None, oom), None);
        // A child that exits 137 or 152 of its own accord (as a shell reports SIGKILL and
        // SIGXCPU), or is SIGKILLed by someone else, is not blamed on a limit without proof.
        assert_eq!(limits.explain(code(137), Some(Duration::from_secs(5)), "Killed"), None);
        assert_eq!(limits.explain(code(152), Some(Duration::from_secs(5)), ""), None);
        assert_eq!(limits.explain(signal(9), Some(Duration::from_millis(10)), "Killed"), None);
        let files = ChildLimits { max_open_files: Some(3), ..ChildLimits::default() };
        let loader = "node: error while loading shared libraries: libdl.so.2: cannot open shared object file: Error 24";
        for tail in [loader, "cat: x: Too many open files", "Error: EMFILE: too many open files, open 'x'"] {
            let why = files.explain(code(127), None, tail).unwrap_or_default();
            assert!(why.starts_with("it ran out of file descriptors with a limit of 3 open files"), "{tail}: {why}");
        }
        assert_eq!(files.explain(code(127), None, "Error 240: something else"), None);
        assert_eq!(ChildLimits::default().explain(code(127), None, loader), None);
    }

    #[test]
    fn node_permission_defaults_to_the_scripts_directory_and_refuses_a_comma() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile.mjs");
        let reads = NodePermission::default_reads(&script).unwrap();
        let dir = std::fs::canonicalize(script.parent().unwrap()).unwrap();
        assert_eq!(reads[0], dir);
        // Every other one is a node_modules directory that exists, in the script's directory or above it.
        for extra in &reads[1..] {
            assert!(extra.ends_with("node_modules") && extra.is_dir() && dir.starts_with(extra.parent().unwrap()));
        }
        // The host's NODE_OPTIONS could widen the model: removed from the child's environment.
        let command = NodePermission::default().command("node", &script).unwrap();
        let removed: Vec<_> = command.get_envs().filter(|(_, value)| value.is_none()).map(|(name, _)| name).collect();
        assert_eq!(removed, [OsStr::new("NODE_OPTIONS")]);
        let comma = NodePermission { allow_read: vec!["/tmp/a,b".into()], ..NodePermission::default() };
        let e = comma.args(OsStr::new("node"), &script).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot allow reading `/tmp/a,b`: Node splits --allow-fs-read at commas; use a path without one"
        );
    }

    #[test]
    fn cpu_time_is_read_from_a_running_child() {
        let mut child =
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]).spawn().unwrap();
        let pid = child.id();
        let used = loop {
            let used = cpu_time_unreaped(pid).unwrap();
            if used > Duration::ZERO {
                break used;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(used > Duration::ZERO);
        child.wait().unwrap();
        assert_eq!(cpu_time_unreaped(pid), None);
    }
}
