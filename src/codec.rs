//! Incremental NDJSON framing: byte chunks in, bounded lines out.

/// The default bound on one line: 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One physical line of input, as the decoder yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A non-blank line, without its `\n` / `\r\n`.
    Line {
        /// 1-based physical line number (blank lines count).
        number: u64,
        /// The line's bytes (not yet checked to be UTF-8).
        bytes: &'a [u8],
    },
    /// A line over the limit: its bytes were discarded as they arrived.
    TooLong {
        /// 1-based physical line number.
        number: u64,
        /// Its length in bytes, without its line ending.
        length: usize,
    },
}

/// Splits a byte stream into lines: accepts `\n` and `\r\n`, skips blank lines (only spaces,
/// tabs and `\r`) while still counting them, and never holds more than `max_line_bytes` (+1
/// for a pending `\r`) of an unfinished line: an over-long line is counted and dropped as it
/// arrives and reported once its end is seen, so memory stays bounded whatever the peer sends.
///
/// Feed chunks with [`feed`](Self::feed), drain frames with [`next_frame`](Self::next_frame)
/// until `None`, and at end of input call [`finish`](Self::finish) for an unterminated last line.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed part of `buf`.
    start: usize,
    /// Where the newline search resumes (everything in `start..scanned` has no `\n`).
    scanned: usize,
    max_line_bytes: usize,
    /// Lines seen so far (the number of the last line yielded or skipped).
    line: u64,
    /// Inside an over-long line: bytes dropped so far and whether the last one was `\r`.
    discarding: Option<(usize, bool)>,
    /// An over-long line whose end arrived in `feed`, to be yielded before anything else.
    pending_too_long: Option<(u64, usize)>,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE_BYTES)
    }
}

impl LineDecoder {
    /// A decoder bounding every line to `max_line_bytes` (excluding its line ending).
    pub fn new(max_line_bytes: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line_bytes,
            line: 0,
            discarding: None,
            pending_too_long: None,
        }
    }

    /// The configured bound.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Bytes currently held for an unfinished line (for tests and memory accounting).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds a chunk of input. Drain [`next_frame`](Self::next_frame) before feeding again
    /// if you want memory bounded by the chunk size.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if let Some((dropped, last_cr)) = self.discarding {
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.discarding = Some((dropped + chunk.len(), chunk.last().map_or(last_cr, |&b| b == b'\r')));
                    return;
                }
                Some(nl) => {
                    let cr = if nl == 0 { last_cr } else { chunk[nl - 1] == b'\r' };
                    let length = dropped + nl - usize::from(cr);
                    self.line += 1;
                    self.discarding = None;
                    self.pending_too_long = Some((self.line, length));
                    chunk = &chunk[nl + 1..];
                }
            }
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Compact only when at least half the buffer is consumed, so a long run of small
            // feeds does not shift the same bytes over and over.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if let Some((number, length)) = self.pending_too_long.take() {
            return Some(Frame::TooLong { number, length });
        }
        loop {
            let Some(rel) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                let partial = self.buf.len() - self.start;
                if partial > self.max_line_bytes.saturating_add(1) {
                    // Cannot fit even as `limit` bytes + `\r`: drop it now, keep counting.
                    let last_cr = self.buf.last() == Some(&b'\r');
                    self.discarding = Some((partial, last_cr));
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                }
                return None;
            };
            let nl = self.scanned + rel;
            let line_start = self.start;
            self.start = nl + 1;
            self.scanned = self.start;
            self.line += 1;
            if let Some(range) = self.content(line_start, nl) {
                return Some(self.frame(range));
            }
        }
    }

    /// At end of input: the last line if it had no newline (or was over-long). The decoder
    /// is empty afterwards.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        if let Some((number, length)) = self.pending_too_long.take() {
            // Only reachable if the caller skipped draining; keep the rest for the next call.
            return Some(Frame::TooLong { number, length });
        }
        if let Some((dropped, last_cr)) = self.discarding.take() {
            self.line += 1;
            return Some(Frame::TooLong { number: self.line, length: dropped - usize::from(last_cr) });
        }
        if self.start == self.buf.len() {
            return None;
        }
        let (line_start, end) = (self.start, self.buf.len());
        self.start = end;
        self.scanned = end;
        self.line += 1;
        let range = self.content(line_start, end)?;
        Some(self.frame(range))
    }

    /// The line in `from..to` without a trailing `\r`, or `None` if it is blank. An over-long
    /// line is never blank: once discarding has begun its bytes are gone, so it could not be
    /// judged the same way whatever the chunking.
    fn content(&self, from: usize, mut to: usize) -> Option<std::ops::Range<usize>> {
        if to > from && self.buf[to - 1] == b'\r' {
            to -= 1;
        }
        (to - from > self.max_line_bytes || !is_blank(&self.buf[from..to])).then_some(from..to)
    }

    fn frame(&self, range: std::ops::Range<usize>) -> Frame<'_> {
        let number = self.line;
        if range.len() > self.max_line_bytes {
            Frame::TooLong { number, length: range.len() }
        } else {
            Frame::Line { number, bytes: &self.buf[range] }
        }
    }
}

/// Only spaces, tabs and carriage returns (JSON whitespace other than `\n`).
pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks`, then finishes; returns each frame as a readable string.
    fn decode(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        let show = |f: Frame<'_>| match f {
            Frame::Line { number, bytes } => format!("{number}:{}", String::from_utf8_lossy(bytes)),
            Frame::TooLong { number, length } => format!("{number}:too long ({length})"),
        };
        for chunk in chunks {
            d.feed(chunk);
            while let Some(f) = d.next_frame() {
                out.push(show(f));
            }
            assert!(d.buffered() <= max + 1 + chunk.len(), "buffer grew past the bound");
        }
        while let Some(f) = d.finish() {
            out.push(show(f));
        }
        out
    }

    #[test]
    fn splits_lines_and_numbers_them() {
        assert_eq!(decode(100, &[b"a\nbb\nccc\n"]), ["1:a", "2:bb", "3:ccc"]);
    }

    #[test]
    fn splits_message_across_chunks_at_every_byte() {
        let input = b"{\"a\":1}\r\n\n  \n{\"b\":2}\nlast";
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(decode(100, &[a, b]), ["1:{\"a\":1}", "4:{\"b\":2}", "5:last"], "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(100, &bytes), ["1:{\"a\":1}", "4:{\"b\":2}", "5:last"]);
    }

    #[test]
    fn strips_crlf_but_keeps_a_lone_inner_cr() {
        assert_eq!(decode(100, &[b"a\r\nb\rc\n"]), ["1:a", "2:b\rc"]);
    }

    #[test]
    fn skips_blank_lines_but_counts_them() {
        assert_eq!(decode(100, &[b"\n\r\n \t \nx\n\n"]), ["4:x"]);
    }

    #[test]
    fn reports_over_long_line_with_its_length_and_goes_on() {
        assert_eq!(decode(4, &[b"12345\nok\n"]), ["1:too long (5)", "2:ok"]);
        assert_eq!(decode(4, &[b"1234\r\n"]), ["1:1234"]);
        assert_eq!(decode(4, &[b"12345\r\n"]), ["1:too long (5)"]);
    }

    #[test]
    fn over_long_line_is_discarded_as_it_arrives() {
        let mut d = LineDecoder::new(8);
        d.feed(b"ok\n0123456789");
        assert!(matches!(d.next_frame(), Some(Frame::Line { number: 1, bytes: b"ok" })));
        assert!(d.next_frame().is_none());
        assert_eq!(d.buffered(), 0, "an over-long partial line is dropped, not kept");
        for _ in 0..1000 {
            d.feed(&[b'x'; 1024]);
            assert!(d.next_frame().is_none());
            assert_eq!(d.buffered(), 0);
        }
        d.feed(b"yz\r\nnext\n");
        assert_eq!(d.next_frame(), Some(Frame::TooLong { number: 2, length: 10 + 1024 * 1000 + 2 }));
        assert!(matches!(d.next_frame(), Some(Frame::Line { number: 3, bytes: b"next" })));
    }

    #[test]
    fn over_long_line_split_between_cr_and_lf_does_not_count_the_cr() {
        assert_eq!(decode(4, &[b"123456789\r", b"\nok\n"]), ["1:too long (9)", "2:ok"]);
    }

    #[test]
    fn over_long_blank_line_is_too_long_however_it_is_chunked() {
        let input = b"     \n\t\t\t\t\t";
        let want = ["1:too long (5)", "2:too long (5)"];
        assert_eq!(decode(2, &[input]), want);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(2, &bytes), want);
        assert_eq!(decode(5, &[input]), Vec::<String>::new());
    }

    #[test]
    fn unterminated_last_line_is_yielded_at_finish() {
        assert_eq!(decode(100, &[b"a\nb"]), ["1:a", "2:b"]);
        assert_eq!(decode(100, &[b"a\nb\r"]), ["1:a", "2:b"]);
        assert_eq!(decode(4, &[b"a\n123456789"]), ["1:a", "2:too long (9)"]);
        assert_eq!(decode(100, &[b"a\n  "]), ["1:a"]);
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert!(decode(100, &[]).is_empty());
        assert!(decode(100, &[b""]).is_empty());
    }

    #[test]
    fn zero_limit_rejects_every_non_blank_line() {
        assert_eq!(decode(0, &[b"a\n\n"]), ["1:too long (1)"]);
    }
}
