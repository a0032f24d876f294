//! What a [`crate::Peer`] call can fail with: a stable code plus a message a person can act on.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::Envelope;

/// Why a request (or any other call on a [`crate::Peer`]) failed. Stable: match on it, not on
/// message texts. The same codes as the TypeScript `PeerError.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The child answered with an `error` message; its text is in the message.
    ErrorReply,
    /// No reply came in time; a late reply will be dropped and counted.
    Timeout,
    /// The child exited (or closed its stdout) before answering.
    PeerExited,
    /// [`crate::Peer::close`] was called.
    Closed,
    /// The arguments cannot be sent (data that cannot be encoded, bad options).
    InvalidArgument,
    /// The child could not be started.
    Spawn,
    /// Reading from or writing to the child failed for another reason.
    Io,
    /// The child died more than [`RestartPolicy::max_restarts`](crate::supervise::RestartPolicy)
    /// times within its window ([`crate::PeerOptions::restart`]): the circuit is open and no
    /// child is started until the window passes. Carries the last exit's status and stderr tail.
    RestartLimit,
}

impl ErrorCode {
    /// The code as the TypeScript API spells it: `ERROR_REPLY`, `TIMEOUT`, `PEER_EXITED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ErrorReply => "ERROR_REPLY",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::PeerExited => "PEER_EXITED",
            ErrorCode::Closed => "CLOSED",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Spawn => "SPAWN",
            ErrorCode::Io => "IO",
            ErrorCode::RestartLimit => "RESTART_LIMIT",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed [`crate::Peer`] call: a stable [`ErrorCode`], a message that says what to do, and
/// what is known of the cause (the error reply, the child's exit status and stderr tail).
#[derive(Debug, Clone)]
pub struct PeerError {
    code: ErrorCode,
    message: String,
    reply: Option<Box<Envelope>>,
    exit_status: Option<ExitStatus>,
    stderr_tail: Option<String>,
}

impl PeerError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PeerError { code, message: message.into(), reply: None, exit_status: None, stderr_tail: None }
    }

    pub(crate) fn error_reply(reply: Envelope) -> Self {
        let id = reply.id.unwrap_or_default();
        let text = match reply.data.as_str() {
            Some(text) => text.to_owned(),
            None => reply.data.to_string(),
        };
        let mut e =
            PeerError::new(ErrorCode::ErrorReply, format!("the child answered request {id} with an error: {text}"));
        e.reply = Some(Box::new(reply));
        e
    }

    /// `limit`: the resource limit that killed the child, where the evidence proves it
    /// ([`crate::process::sandbox::ChildLimits::explain`]).
    pub(crate) fn exited(
        command: &str,
        status: Option<ExitStatus>,
        stderr_tail: String,
        limit: Option<String>,
        restarting: bool,
    ) -> Self {
        let mut how = match status {
            Some(status) if status.code().is_none() => format!("was killed by {status}"),
            Some(status) => format!("exited with {status}"),
            None => "closed its stdout (it may still be running)".to_owned(),
        };
        if let Some(limit) = limit {
            how = format!("{how}: {limit},");
        }
        let stderr = if stderr_tail.is_empty() {
            "; it wrote nothing to stderr".to_owned()
        } else {
            format!("; the end of its stderr:\n{}", stderr_tail.trim_end())
        };
        let next = next_step(restarting);
        let message = format!("child `{command}` {how} before answering: no reply can come; {next}{stderr}");
        PeerError {
            code: ErrorCode::PeerExited,
            message,
            reply: None,
            exit_status: status,
            stderr_tail: Some(stderr_tail),
        }
    }

    /// The child was declared hung ([`crate::PeerOptions::hang`]) and is being stopped.
    pub(crate) fn hung(
        command: &str,
        pid: u32,
        quiet: Duration,
        pending: usize,
        stderr_tail: String,
        restarting: bool,
    ) -> Self {
        let ms = quiet.as_millis();
        let stderr = if stderr_tail.is_empty() {
            "; it wrote nothing to stderr".to_owned()
        } else {
            format!("; the end of its stderr:\n{}", stderr_tail.trim_end())
        };
        let next = next_step(restarting);
        let message = format!(
            "child `{command}` (pid {pid}) hung: nothing came from it for {ms} ms while {pending} request(s) awaited \
             replies (PeerOptions::hang); it is being stopped (stdin closed, then SIGTERM, then SIGKILL) and no reply \
             can come; {next}{stderr}"
        );
        PeerError {
            code: ErrorCode::PeerExited,
            message,
            reply: None,
            exit_status: None,
            stderr_tail: Some(stderr_tail),
        }
    }

    /// The circuit is open: `last` is how the last child ended.
    pub(crate) fn restart_limit(last: &PeerError, restarts: u32, window: Duration, reopens_in: Duration) -> Self {
        let message = format!(
            "the child was restarted {restarts} time(s) within {} ms, the most PeerOptions::restart allows \
             (max_restarts); no child is started for another {} ms. Its last end: {}",
            window.as_millis(),
            reopens_in.as_millis(),
            last.message
        );
        PeerError {
            code: ErrorCode::RestartLimit,
            message,
            reply: None,
            exit_status: last.exit_status,
            stderr_tail: last.stderr_tail.clone(),
        }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message, as [`Display`](fmt::Display) shows it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For [`ErrorCode::ErrorReply`]: the `error` message the child sent.
    pub fn reply(&self) -> Option<&Envelope> {
        self.reply.as_deref()
    }

    /// For [`ErrorCode::PeerExited`] (and [`ErrorCode::RestartLimit`], of the last child): how
    /// the child ended, if it had exited when this was made.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit_status
    }

    /// For [`ErrorCode::PeerExited`] (and [`ErrorCode::RestartLimit`], of the last child): the
    /// last ≤ 4 KiB of the child's stderr.
    pub fn stderr_tail(&self) -> Option<&str> {
        self.stderr_tail.as_deref()
    }
}

/// What a caller can do after the child ended.
fn next_step(restarting: bool) -> &'static str {
    if restarting {
        "the next request starts a fresh child after a backoff (PeerOptions::restart)"
    } else {
        "close this Peer and start a new one"
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}
