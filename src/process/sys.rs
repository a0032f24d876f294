//! Process control that std does not offer: signals to the child's process group and
//! noticing an exit without reaping. Safe wrappers only (nix); the workspace denies unsafe.

#[cfg(unix)]
pub use unix::*;

#[cfg(not(unix))]
pub use other::*;

#[cfg(unix)]
mod unix {
    use std::process::{Child, Command, ExitStatus};

    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    use crate::process::StopSignal;

    /// The child leads a new process group, which is what [`signal_group`] signals.
    pub fn own_process_group(command: &mut Command) {
        std::os::unix::process::CommandExt::process_group(command, 0);
    }

    pub fn signal_group(child: &mut Child, sig: StopSignal) {
        let Ok(pid) = i32::try_from(child.id()) else { return };
        let signal = match sig {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        // ESRCH (nobody left) is the usual answer and fine.
        let _ = killpg(Pid::from_raw(pid), signal);
    }

    /// `Some(true)` once the child has exited, without reaping it; `None` where unsupported.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    pub fn exited_unreaped(pid: u32) -> Option<bool> {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let pid = Pid::from_raw(i32::try_from(pid).ok()?);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => Some(false),
            Ok(_) => Some(true),
            Err(_) => None,
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    pub fn exited_unreaped(_pid: u32) -> Option<bool> {
        None
    }

    /// Blocks until the child has exited, without reaping it, and says how.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    pub fn wait_exited_unreaped(pid: u32) -> Option<ExitStatus> {
        use nix::errno::Errno;
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        use std::os::unix::process::ExitStatusExt;
        let pid = Pid::from_raw(i32::try_from(pid).ok()?);
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                // The wait status encoding: the code in the second byte, or the signal.
                Ok(WaitStatus::Exited(_, code)) => return Some(ExitStatus::from_raw((code & 0xff) << 8)),
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    return Some(ExitStatus::from_raw(signal as i32 | if core { 0x80 } else { 0 }))
                }
                Err(Errno::EINTR) => continue,
                // Stopped or continued cannot come without WSTOPPED/WCONTINUED.
                Ok(_) | Err(_) => return None,
            }
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    pub fn wait_exited_unreaped(_pid: u32) -> Option<ExitStatus> {
        None
    }
}

/// Elsewhere: no process groups or signals; the child is killed outright after the grace.
#[cfg(not(unix))]
mod other {
    use std::process::{Child, Command, ExitStatus};

    use crate::process::StopSignal;

    pub fn own_process_group(_command: &mut Command) {}

    pub fn signal_group(child: &mut Child, sig: StopSignal) {
        if let StopSignal::Kill = sig {
            let _ = child.kill();
        }
    }

    pub fn exited_unreaped(_pid: u32) -> Option<bool> {
        None
    }

    pub fn wait_exited_unreaped(_pid: u32) -> Option<ExitStatus> {
        None
    }
}
