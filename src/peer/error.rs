//! What a [`crate::Peer`] call can fail with: a stable code plus a message a person can act on.

use std::fmt;
use std::process::ExitStatus;

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
        let message = format!(
            "child `{command}` {how} before answering: no reply can come; close this Peer and start a new one{stderr}"
        );
        PeerError {
            code: ErrorCode::PeerExited,
            message,
            reply: None,
            exit_status: status,
            stderr_tail: Some(stderr_tail),
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

    /// For [`ErrorCode::PeerExited`]: how the child ended, if it had exited when this was made.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit_status
    }

    /// For [`ErrorCode::PeerExited`]: the last ≤ 4 KiB of the child's stderr.
    pub fn stderr_tail(&self) -> Option<&str> {
        self.stderr_tail.as_deref()
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}
