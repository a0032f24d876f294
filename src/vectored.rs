//! Replies written with one vectored write instead of being copied into one buffer: a big
//! `bin` payload (the `bytes` service's echo, a handler's [`crate::Data::Bytes`], a
//! [`crate::Peer`]'s request) or `str` (the `data` an `ack` repeats, a handler's string) is
//! written from where it already is, between the few bytes of frame before and after it.
//! Sans-IO but for [`write_all_vectored`], the one loop that writes such a list whole, however
//! little each `writev` takes.

use std::io::{self, IoSlice, Write};

/// A `bin` or `str` payload at least this long is spliced into the write instead of being
/// copied into the reply's buffer. Below it a copy costs less than what a splice costs a
/// pipelined stream of small messages (the loop writes a splice's replies before reading the
/// next frame, one `writev` per such reply, where small replies share one write per read).
pub const SPLICE_MIN_BYTES: usize = 64 * 1024;

/// How many slices one `writev` is given at most (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// A piece of a reply written from where it is.
#[derive(Debug)]
enum Piece<'p> {
    /// Borrowed from the request (its frame's buffer).
    Borrowed(&'p [u8]),
    /// Moved in (a handler's bytes).
    Owned(Vec<u8>),
}

impl Piece<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Borrowed(bytes) => bytes,
            Piece::Owned(bytes) => bytes,
        }
    }
}

/// Reply frames being built for one vectored write: bytes appended to a buffer (the caller's,
/// reused from reply to reply), with pieces between them that are written from where they
/// are, never copied: borrowed from the request (lifetime `'p`, e.g. the frame a
/// [`crate::FrameDecoder`] holds) or moved in.
///
/// What [`Service::answer_packet_vectored`](crate::Service::answer_packet_vectored) writes
/// to. The bytes written, in order, are [`to_vec`](Self::to_vec)'s: the buffer's bytes with
/// each piece inserted where the buffer ended when it was added.
#[derive(Debug)]
pub struct FrameOut<'o, 'p> {
    buf: &'o mut Vec<u8>,
    /// Each piece with the buffer's length when it was added (non-decreasing).
    pieces: Vec<(usize, Piece<'p>)>,
    /// Whether pieces of [`SPLICE_MIN_BYTES`] or more are kept as pieces (else all are copied).
    splice: bool,
}

impl<'o, 'p> FrameOut<'o, 'p> {
    /// Appends to `buf` (what it holds already is written first); pieces of
    /// [`SPLICE_MIN_BYTES`] or more are kept as pieces, shorter ones copied into `buf`.
    pub fn new(buf: &'o mut Vec<u8>) -> Self {
        FrameOut { buf, pieces: Vec::new(), splice: true }
    }

    /// Appends to `buf`, copying every piece into it: for a caller that needs the replies in
    /// one buffer ([`Service::answer_packet`](crate::Service::answer_packet)'s callers).
    pub fn flat(buf: &'o mut Vec<u8>) -> Self {
        FrameOut { buf, pieces: Vec::new(), splice: false }
    }

    /// Whether a piece of `len` bytes would be kept as a piece rather than copied.
    pub fn splices(&self, len: usize) -> bool {
        self.splice && len >= SPLICE_MIN_BYTES
    }

    /// The buffer: append the reply's own bytes here. Its bytes before a piece's position
    /// may still be changed (a frame's length header patched); bytes must not be removed
    /// from before the last piece.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        self.buf
    }

    /// Appends `bytes` by reference, to be written from where they are (copied into the
    /// buffer when [`splices`](Self::splices) says no).
    pub fn borrow(&mut self, bytes: &'p [u8]) {
        if self.splices(bytes.len()) {
            self.pieces.push((self.buf.len(), Piece::Borrowed(bytes)));
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Appends `bytes` by value, to be written from its own allocation (copied into the
    /// buffer when [`splices`](Self::splices) says no).
    pub fn give(&mut self, bytes: Vec<u8>) {
        if self.splices(bytes.len()) {
            self.pieces.push((self.buf.len(), Piece::Owned(bytes)));
        } else {
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// Whether anything was appended other than into the buffer.
    pub fn has_pieces(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// Every byte to be written, in order.
    pub fn len(&self) -> usize {
        self.buf.len() + self.pieces.iter().map(|(_, p)| p.bytes().len()).sum::<usize>()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.pieces.is_empty()
    }

    /// Everything in order, as slices for one vectored write (empty ones left out).
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(2 * self.pieces.len() + 1);
        let mut at = 0;
        for (end, piece) in &self.pieces {
            // A service that broke `buf`'s contract (removed bytes from before a piece) gets
            // the bytes that are left, in order, not a panic in the serve loop.
            let end = (*end).clamp(at, self.buf.len().max(at));
            if end > at {
                slices.push(IoSlice::new(&self.buf[at..end]));
            }
            slices.push(IoSlice::new(piece.bytes()));
            at = end;
        }
        if self.buf.len() > at {
            slices.push(IoSlice::new(&self.buf[at..]));
        }
        slices
    }

    /// Everything in order, copied into one `Vec` (for tests and for callers without a
    /// vectored write).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for slice in self.io_slices() {
            out.extend_from_slice(&slice);
        }
        out
    }

    /// The pieces, each with where it goes in the buffer, for a caller that keeps them (the
    /// peers' write queue); a borrowed piece is copied.
    pub(crate) fn into_pieces(self) -> Vec<(usize, Vec<u8>)> {
        self.pieces
            .into_iter()
            .map(|(at, piece)| match piece {
                Piece::Borrowed(bytes) => (at, bytes.to_vec()),
                Piece::Owned(bytes) => (at, bytes),
            })
            .collect()
    }

    /// Writes everything to `output` ([`write_all_vectored`]) and empties the buffer.
    ///
    /// # Errors
    /// What writing returned; how much was written then is unknown.
    pub fn write_to(mut self, output: &mut impl Write) -> io::Result<()> {
        let written = write_all_vectored(output, &mut self.io_slices());
        self.pieces.clear();
        self.buf.clear();
        written
    }
}

/// Writes every byte of `slices` to `output`, in order, with as few `write_vectored` calls as
/// it takes: a call that writes part of the list (a pipe with less room, a signal) is followed
/// by one for the rest; `Interrupted` is retried; a call that writes nothing is a `WriteZero`
/// error with [`Write::write_all`]'s text ("failed to write whole buffer"), so that a reply
/// fails as it did when written from one buffer. At most 1024 slices go to one call
/// (`IOV_MAX`). `slices` is consumed (advanced).
///
/// # Errors
/// What `write_vectored` returned other than `Interrupted`, or `WriteZero`.
pub fn write_all_vectored(output: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let window = slices.len().min(MAX_SLICES);
        match output.write_vectored(&slices[..window]) {
            // `write_all`'s words: the error reads as the one-buffer write's did.
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer")),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_removed_from_before_a_piece_give_what_is_left_in_order_not_a_panic() {
        let big = vec![7u8; SPLICE_MIN_BYTES];
        let mut buf = Vec::new();
        let mut out = FrameOut::new(&mut buf);
        out.buf().extend_from_slice(b"head");
        out.borrow(&big);
        out.buf().extend_from_slice(b"tail");
        out.buf().truncate(2);
        let mut want = b"he".to_vec();
        want.extend_from_slice(&big);
        assert!(out.to_vec() == want);
    }

    /// A writer that takes at most `step` bytes per call and at most `slices` slices, and is
    /// interrupted every third call: what a full pipe and signals do to a write.
    struct Stingy {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Stingy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn big_pieces_go_where_the_buffer_ended_and_small_ones_are_copied_there() {
        let big = vec![b'x'; SPLICE_MIN_BYTES];
        let owned = vec![b'O'; SPLICE_MIN_BYTES + 1];
        let mut buf = b"ab".to_vec();
        let mut out = FrameOut::new(&mut buf);
        out.borrow(&big);
        out.buf().extend_from_slice(b"cd");
        out.give(owned.clone());
        out.borrow(b"small");
        out.give(b"!".to_vec());
        out.buf()[0] = b'A';
        let want = [&b"Ab"[..], &big, b"cd", &owned, b"small!"].concat();
        assert_eq!(out.to_vec(), want);
        assert_eq!(out.len(), want.len());
        assert_eq!(out.io_slices().len(), 5);
        assert!(out.has_pieces());
        drop(out);
        assert_eq!(buf, b"Abcdsmall!", "only the small pieces were copied");

        let mut flat = Vec::new();
        let mut out = FrameOut::flat(&mut flat);
        out.borrow(&big);
        out.give(owned.clone());
        assert!(!out.has_pieces());
        drop(out);
        assert_eq!(flat, [&big[..], &owned].concat(), "a flat FrameOut copies everything");
    }

    #[test]
    fn a_write_that_takes_a_few_bytes_at_a_time_and_is_interrupted_still_writes_all_in_order() {
        let big: Vec<u8> = (0..SPLICE_MIN_BYTES as u32).map(|i| (i % 251) as u8).collect();
        for step in [1, 7, 4096, 65_537, 1 << 20] {
            let mut buf = b"head".to_vec();
            let mut out = FrameOut::new(&mut buf);
            out.borrow(&big);
            out.borrow(&big);
            out.buf().extend_from_slice(b"tail");
            let want = out.to_vec();
            let mut w = Stingy { out: Vec::new(), step, calls: 0 };
            out.write_to(&mut w).unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(w.out, want, "step {step}");
            assert!(buf.is_empty(), "the buffer is emptied once written");
        }
    }

    #[test]
    fn more_slices_than_one_writev_takes_are_written_in_turns() {
        let pieces: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        struct Counting(Vec<u8>, usize);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                assert!(bufs.len() <= MAX_SLICES, "{} slices in one call", bufs.len());
                self.1 += 1;
                bufs.iter().for_each(|b| self.0.extend_from_slice(b));
                Ok(bufs.iter().map(|b| b.len()).sum())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Counting(Vec::new(), 0);
        assert!(write_all_vectored(&mut w, &mut slices).is_ok());
        assert_eq!(w.0, pieces.concat());
        assert_eq!(w.1, 3);
    }

    #[test]
    fn a_writer_that_takes_nothing_is_write_zero_and_other_errors_pass_through() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = [1u8, 2, 3];
        let kind = |r: io::Result<()>| r.err().map(|e| e.kind());
        assert_eq!(kind(write_all_vectored(&mut Zero, &mut [IoSlice::new(&data)])), Some(io::ErrorKind::WriteZero));
        let text = |r: io::Result<()>| r.err().map(|e| e.to_string());
        assert_eq!(
            text(write_all_vectored(&mut Zero, &mut [IoSlice::new(&data)])),
            text(Zero.write_all(&data)),
            "the words of the one-buffer write's error"
        );
        assert_eq!(kind(write_all_vectored(&mut Broken, &mut [IoSlice::new(&data)])), Some(io::ErrorKind::BrokenPipe));
        assert_eq!(kind(write_all_vectored(&mut Zero, &mut [])), None, "nothing to write writes nothing");
    }
}
