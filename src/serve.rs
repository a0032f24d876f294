//! The library's I/O loop for a child service: bytes from a reader through a
//! [`crate::LineDecoder`] (or, for MessagePack, a [`crate::FrameDecoder`]) into a [`Service`],
//! replies out to a writer. This and the process
//! layer are the only places in the library that touch a pipe.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::codec::LineDecoder;
use crate::encoding::Encoding;
use crate::frame::FrameDecoder;
use crate::service::Service;
use crate::vectored::FrameOut;

/// How much is read from the input at a time (the Linux pipe buffer size).
const READ_CHUNK: usize = 64 * 1024;

/// Why [`serve`] stopped before its input ended.
#[derive(Debug)]
pub enum ServeError {
    /// Reading the input failed.
    Read(io::Error),
    /// Writing the replies failed, other than by the reader going away (which ends the loop
    /// normally).
    Write(io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Read(e) => write!(f, "reading stdin: {e}"),
            ServeError::Write(e) => write!(f, "writing stdout: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Read(e) | ServeError::Write(e) => Some(e),
        }
    }
}

/// Serves `service` on this process's stdin and stdout: what a Rust child service's `main`
/// calls. See [`serve`] for when it returns.
///
/// ```no_run
/// use rust_ts_ipc::{serve_stdio, Data, Handlers};
///
/// fn main() -> Result<(), rust_ts_ipc::ServeError> {
///     serve_stdio(Handlers::new().on("upper", |req| match req.data.as_str() {
///         Some(text) => Ok(Data::from(text.to_uppercase())),
///         None => Err("upper: expected a string"),
///     }))
/// }
/// ```
///
/// # Errors
/// As [`serve`]; the texts name stdin and stdout.
pub fn serve_stdio(service: impl Service) -> Result<(), ServeError> {
    serve(service, io::stdin().lock(), io::stdout().lock())
}

/// [`serve_stdio`] in the given encoding: `Encoding::Msgpack` reads and writes MessagePack
/// frames. Both ends must have chosen the same.
///
/// # Errors
/// As [`serve`].
pub fn serve_stdio_with(service: impl Service, encoding: Encoding) -> Result<(), ServeError> {
    #[cfg(unix)]
    if encoding == Encoding::Msgpack {
        return serve_with(service, encoding, io::stdin().lock(), frame_stdout()?);
    }
    serve_with(service, encoding, io::stdin().lock(), io::stdout().lock())
}

/// How [`serve_stdio_with_options`] serves.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The wire encoding; both ends must have chosen the same: [`Encoding::Json`].
    pub encoding: Encoding,
    /// After answering, keep asking stdin for the next request for up to this long before
    /// sleeping in `poll` (adaptive, see [`crate::spin`]): a request that comes within it is
    /// read without a wake-up, at the price of a CPU busy for up to this long after each
    /// message. Never spins when the process may run on one CPU only. Zero (the default): off,
    /// stdin is read exactly as by [`serve_stdio_with`].
    pub spin: Duration,
}

/// [`serve_stdio`] with [`ServeOptions`]: the encoding and the spin budget.
///
/// With a spin budget, stdin is read through a [`SpinReader`](crate::spin::SpinReader) over a
/// duplicate of its descriptor (std's buffered stdin would hide bytes from `poll`), which
/// spins with zero-timeout `poll`s: stdin's `O_NONBLOCK` flag, shared with whoever else holds
/// it, is left alone.
///
/// # Errors
/// As [`serve`]; duplicating stdin's descriptor failing is a [`ServeError::Read`].
pub fn serve_stdio_with_options(service: impl Service, options: &ServeOptions) -> Result<(), ServeError> {
    #[cfg(unix)]
    if !options.spin.is_zero() {
        use std::os::fd::AsFd;
        let stdin = io::stdin().as_fd().try_clone_to_owned().map_err(ServeError::Read)?;
        let input = crate::spin::SpinReader::new(std::fs::File::from(stdin), options.spin);
        if options.encoding == Encoding::Msgpack {
            return serve_with(service, options.encoding, input, frame_stdout()?);
        }
        return serve_with(service, options.encoding, input, io::stdout().lock());
    }
    serve_stdio_with(service, options.encoding)
}

/// How many bytes of replies the kernel is asked to hold in stdout's pipe or socket under
/// msgpack: 1 MiB (Linux's default cap for an unprivileged pipe, `/proc/sys/fs/pipe-max-size`),
/// so that a reply of that size is written in one go instead of 64 KiB at a time, each
/// waiting for the reader to wake up and drain the last.
#[cfg(unix)]
pub(crate) const FRAME_PIPE_BYTES: usize = 1024 * 1024;

/// Stdout for frames: a `File` on a duplicate of its descriptor, not std's `Stdout`, whose
/// line buffering searches every reply for a newline byte (binary frames have them at random)
/// and splits the write there; and stdin's and stdout's kernel buffers widened to
/// [`FRAME_PIPE_BYTES`] where the system allows it (a pipe's `F_SETPIPE_SZ` acts on both its
/// ends, so the writer of stdin gains too; for a socket only the send side can be widened).
/// Widening is best effort: a file, a terminal or a refused size leave things as they were.
#[cfg(unix)]
fn frame_stdout() -> Result<std::fs::File, ServeError> {
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    // Anything written through `Stdout` before goes out first.
    stdout.lock().flush().map_err(ServeError::Write)?;
    let fd = stdout.as_fd().try_clone_to_owned().map_err(ServeError::Write)?;
    widen(&fd, true);
    widen(&io::stdin().as_fd(), false);
    Ok(std::fs::File::from(fd))
}

/// Best effort: asks for [`FRAME_PIPE_BYTES`] of kernel buffer on `fd` (see [`frame_stdout`]);
/// `send`: if `fd` is not a pipe, widen its socket's send buffer instead. The `Peer` widens the
/// pipes it creates for a msgpack child with it too.
#[cfg(unix)]
pub(crate) fn widen(fd: &impl std::os::fd::AsFd, send: bool) {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::sys::socket::{setsockopt, sockopt};
    let bytes = i32::try_from(FRAME_PIPE_BYTES).unwrap_or(i32::MAX);
    if fcntl(fd.as_fd(), FcntlArg::F_SETPIPE_SZ(bytes)).is_err() && send {
        // Not a pipe (or the size was refused): a socket's send buffer, if it is one.
        let _ = setsockopt(fd, sockopt::SndBuf, &FRAME_PIPE_BYTES);
    }
}

/// Answers every line of `input` with `service`, writing the replies to `output`.
///
/// Reads in chunks of 64 KiB and writes the replies to everything one chunk held with one
/// write and one flush, so pipelined messages cost no syscall each and a lone request is
/// answered at once. Memory is bounded by the service's
/// [`max_line_bytes`](Service::max_line_bytes): a longer line is dropped as it arrives.
///
/// Returns `Ok` when the input ends (after answering an unterminated last line), when the
/// service [is done](Service::is_done) (the rest of the input is not read), or when the reader
/// of `output` has gone away (`BrokenPipe`): each is a normal end of a conversation.
///
/// # Errors
/// Reading `input` or writing `output` failed otherwise.
pub fn serve(service: impl Service, input: impl Read, output: impl Write) -> Result<(), ServeError> {
    serve_with(service, Encoding::Json, input, output)
}

/// The stream's decoder, by encoding.
enum Decoder {
    Lines(LineDecoder),
    Frames(FrameDecoder),
}

impl Decoder {
    /// Reads the next input into the decoder: lines through `buf`, frames straight into the
    /// frame decoder (at least [`READ_CHUNK`] at a time, the rest of a big frame in one read
    /// if the pipe holds it). Returns the bytes read: 0 at the end of input.
    fn read(&mut self, input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Lines(d) => {
                let n = input.read(buf)?;
                d.feed(&buf[..n]);
                Ok(n)
            }
            Decoder::Frames(d) => {
                let n = input.read(d.read_space(READ_CHUNK))?;
                d.commit(n);
                Ok(n)
            }
        }
    }

    /// Answers what the decoder holds (at the end of input, `finish`es it first); stops early
    /// once the service is done. Replies go to `out`, except that a frame whose replies hold a
    /// spliced piece (borrowed from the decoder's buffer, which the next frame may reuse) has
    /// them written to `output` at once, with what `out` held before, in one vectored write.
    ///
    /// # Errors
    /// What writing such replies returned.
    fn answer(
        &mut self,
        service: &mut impl Service,
        out: &mut Vec<u8>,
        output: &mut impl Write,
        at_end: bool,
    ) -> io::Result<()> {
        match self {
            Decoder::Lines(d) => loop {
                let frame = if at_end { d.finish() } else { d.next_frame() };
                let Some(frame) = frame else { break };
                service.answer(frame, out);
                if service.is_done() {
                    break;
                }
            },
            Decoder::Frames(d) => loop {
                let packet = if at_end { d.finish() } else { d.next_packet() };
                let Some(packet) = packet else { break };
                let mut replies = FrameOut::new(out);
                service.answer_packet_vectored(packet, &mut replies);
                if replies.has_pieces() {
                    replies.write_to(output)?;
                    output.flush()?;
                }
                if service.is_done() {
                    break;
                }
            },
        }
        Ok(())
    }
}

/// [`serve`] in the given encoding: lines bounded by the service's
/// [`max_line_bytes`](Service::max_line_bytes), or MessagePack frames bounded by its
/// [`max_frame_bytes`](Service::max_frame_bytes) and answered by
/// [`answer_packet_vectored`](Service::answer_packet_vectored). A stream that ends inside a
/// frame gets an `error` reply saying so before the loop returns. A reply holding a big
/// payload by reference (the `bytes` echo or the `ack` of a frame's data of
/// [`crate::SPLICE_MIN_BYTES`] or more) is written, with the replies gathered before it, at
/// once in one vectored write (repeated for what a write leaves), before the next frame is
/// answered.
///
/// # Errors
/// As [`serve`].
pub fn serve_with(
    mut service: impl Service,
    encoding: Encoding,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<(), ServeError> {
    let mut decoder = match encoding {
        Encoding::Json => Decoder::Lines(LineDecoder::new(service.max_line_bytes())),
        Encoding::Msgpack => Decoder::Frames(FrameDecoder::new(service.max_frame_bytes())),
    };
    let mut buf = vec![0; READ_CHUNK];
    let mut out = Vec::with_capacity(READ_CHUNK);
    loop {
        let n = match decoder.read(&mut input, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ServeError::Read(e)),
        };
        let mut written = decoder.answer(&mut service, &mut out, &mut output, n == 0);
        if written.is_ok() && !out.is_empty() {
            written = output.write_all(&out).and_then(|()| output.flush());
            out.clear();
        }
        match written {
            Ok(()) => {}
            // The reader went away: a normal way for a conversation to end.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(ServeError::Write(e)),
        }
        if n == 0 || service.is_done() {
            return Ok(());
        }
    }
}
