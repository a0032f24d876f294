//! Incremental length-prefixed framing for the `msgpack` encoding: byte chunks in, bounded
//! frames out. The analogue of [`crate::LineDecoder`] for a stream of frames, each a 4-byte
//! little-endian unsigned length N followed by N bytes.
//!
//! Its items are [`Packet`]s, not [`crate::Frame`]s: a [`crate::Frame`] is one line of the
//! NDJSON stream, a [`Packet`] one length-prefixed frame of the MessagePack stream, and the two
//! are told apart by type so that a service cannot answer one stream with the other's rules.

/// The default bound on one frame's body: 16 MiB (the same as a line's).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The length header in front of every frame: a little-endian `u32`.
pub const FRAME_HEADER_BYTES: usize = 4;

/// One frame of input, as the [`FrameDecoder`] yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A whole frame within the limit, without its length header (possibly empty).
    Frame {
        /// 1-based frame number (every frame counts, empty and over-long ones too).
        number: u64,
        /// The frame's body: what its header announced.
        bytes: &'a [u8],
    },
    /// A frame over the limit: its body was skipped as it arrived, never held.
    TooLong {
        /// 1-based frame number.
        number: u64,
        /// The length its header announced.
        length: usize,
    },
    /// The stream ended in the middle of a frame (only from [`FrameDecoder::finish`]).
    Cut {
        /// 1-based frame number.
        number: u64,
        /// Bytes of the header that arrived (when `length` is `None`), else of the body.
        received: usize,
        /// The body's length, if the whole header arrived.
        length: Option<usize>,
    },
}

/// A range of a frame's body received into memory of its own (see
/// [`FrameDecoder::detach_range`]), handed out with the frame by
/// [`FrameDecoder::next_split`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// Where the range began in the frame's body: the frame's other bytes, as
    /// [`next_split`](FrameDecoder::next_split) yields them, have the range cut out here.
    pub at: usize,
    /// The range's bytes, exactly as they arrived.
    pub bytes: Vec<u8>,
}

/// Splits a byte stream into length-prefixed frames, never holding more than the header plus
/// `max_frame_bytes` of an unfinished frame once drained: a frame whose header announces more
/// is skipped as its bytes arrive and reported (with its length) once its last byte has gone
/// by, so memory stays bounded whatever the peer sends.
///
/// Feed chunks with [`feed`](Self::feed) (or read straight into the decoder with
/// [`read_space`](Self::read_space) and [`commit`](Self::commit), which saves copying every
/// byte once), drain packets with [`next_packet`](Self::next_packet) until `None`, and at end
/// of input call [`finish`](Self::finish): it reports a frame the stream ended inside of as
/// [`Packet::Cut`].
///
/// A caller that knows what a big frame holds can have part of its body received straight into
/// memory of its own, with no copy: [`partial_frame`](Self::partial_frame) shows the frame being
/// received, [`detach_range`](Self::detach_range) names the range, and
/// [`next_split`](Self::next_split) yields the frame with the range beside it.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Storage: `start..end` holds the unconsumed input; `end..` is room for the next read
    /// (initialised once, when the storage grows, and reused).
    buf: Vec<u8>,
    /// Start of the unconsumed part of `buf`.
    start: usize,
    /// End of the input held in `buf`.
    end: usize,
    max_frame_bytes: usize,
    /// Frames seen so far (the number of the last one yielded or being skipped).
    frame: u64,
    /// Inside an over-long frame: its number, its length and the body bytes still to skip.
    skipping: Option<(u64, usize, usize)>,
    /// An over-long frame whose end arrived in `feed`, to be yielded before anything else.
    pending_too_long: Option<(u64, usize)>,
    /// The range of the frame being received that goes to memory of its own (the rest of the
    /// frame's bytes are held in `buf`, the range cut out).
    detached: Option<Receiving>,
}

/// A detached range being received.
#[derive(Debug)]
struct Receiving {
    /// Its bytes: the first `filled` arrived; the `Vec`'s length is `filled` (room reserved for
    /// the rest) or, once [`FrameDecoder::read_space`] handed the rest out, `len`.
    range: Detached,
    filled: usize,
    len: usize,
    /// Handed out by [`FrameDecoder::detached_rest`], not yet taken back by `appended`.
    appending: bool,
}

impl Receiving {
    fn lacking(&self) -> usize {
        self.len - self.filled
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder bounding every frame's body to `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame_bytes,
            frame: 0,
            skipping: None,
            pending_too_long: None,
            detached: None,
        }
    }

    /// The configured bound.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Bytes currently held for an unfinished frame (for tests and memory accounting).
    pub fn buffered(&self) -> usize {
        self.end - self.start + self.detached.as_ref().map_or(0, |r| r.filled)
    }

    /// Bytes held in `buf` (the detached range's are apart).
    fn held(&self) -> usize {
        self.end - self.start
    }

    /// Adds a chunk of input. Drain [`next_packet`](Self::next_packet) before feeding again
    /// if you want memory bounded by the chunk size.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if let Some((number, length, left)) = self.skipping {
            if chunk.len() < left {
                self.skipping = Some((number, length, left - chunk.len()));
                return;
            }
            self.skipping = None;
            self.pending_too_long = Some((number, length));
            chunk = &chunk[left..];
        }
        if let Some(r) = &mut self.detached {
            let n = chunk.len().min(r.lacking());
            r.range.bytes.truncate(r.filled);
            r.range.bytes.extend_from_slice(&chunk[..n]);
            r.filled += n;
            chunk = &chunk[n..];
        }
        self.reserve(chunk.len());
        self.buf[self.end..self.end + chunk.len()].copy_from_slice(chunk);
        self.end += chunk.len();
    }

    /// Room to read the next input into, in place of [`feed`](Self::feed): at least
    /// `at_least` bytes, and at least what the frame being received still lacks (when its
    /// header has arrived and it is within the limit), so that a big frame arrives in as few
    /// reads as the pipe allows, each straight into the decoder. Write into the start of it
    /// and say how many bytes with [`commit`](Self::commit).
    ///
    /// The decoder's storage grows to hold the largest frame received plus `at_least` and is
    /// reused; what is held once drained stays bounded as with `feed`.
    ///
    /// While a [detached range](Self::detach_range) is being received, the space is the rest of
    /// that range, whatever `at_least` asks (it may be less).
    pub fn read_space(&mut self, at_least: usize) -> &mut [u8] {
        if self.detached.as_ref().is_some_and(|r| r.lacking() > 0) {
            match &mut self.detached {
                Some(r) => {
                    r.appending = false;
                    r.range.bytes.resize(r.len, 0);
                    &mut r.range.bytes[r.filled..]
                }
                None => &mut [],
            }
        } else {
            self.buf_space(at_least)
        }
    }

    /// [`read_space`](Self::read_space) in the decoder's own storage.
    fn buf_space(&mut self, at_least: usize) -> &mut [u8] {
        let lacking = match self.announced() {
            Some(length) if self.skipping.is_none() && length <= self.max_frame_bytes => {
                (FRAME_HEADER_BYTES + length).saturating_sub(self.buffered())
            }
            _ => 0,
        };
        self.reserve(at_least.max(lacking));
        &mut self.buf[self.end..]
    }

    /// Takes in the first `n` bytes of the last [`read_space`](Self::read_space), as
    /// [`feed`](Self::feed) would take them in. Drain [`next_packet`](Self::next_packet) before
    /// reading again if you want memory bounded.
    ///
    /// # Panics
    /// If `n` is more than that space held: a caller's bug, not a property of the input.
    pub fn commit(&mut self, n: usize) {
        if let Some(r) = &mut self.detached {
            if r.lacking() > 0 {
                assert!(n <= r.lacking() && r.range.bytes.len() == r.len, "commit({n}) past the read space");
                r.filled += n;
                return;
            }
        }
        assert!(n <= self.buf.len() - self.end, "commit({n}) past the read space");
        let mut new = self.end..self.end + n;
        self.end += n;
        if let Some((number, length, left)) = self.skipping {
            // Skipping implies nothing else is held: the new bytes are all there is.
            let skipped = left.min(n);
            if skipped < left {
                self.skipping = Some((number, length, left - skipped));
            } else {
                self.skipping = None;
                self.pending_too_long = Some((number, length));
            }
            new.start += skipped;
            self.start = new.start;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for `wanted` more bytes after `end`: reuses the storage when what is held is
    /// consumed, moves the unconsumed bytes to the front when that costs no more than the room
    /// it frees, and grows the storage otherwise.
    fn reserve(&mut self, wanted: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= wanted {
            return;
        }
        let held = self.end - self.start;
        if self.start > 0 && self.start >= held && held + wanted <= self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = held;
            return;
        }
        self.buf.resize(self.end + wanted, 0);
    }

    /// The next complete frame (or over-long one), or `None` when more input is needed.
    ///
    /// A frame with a [detached range](Self::detach_range) is yielded without that range (use
    /// [`next_split`](Self::next_split) to have it too).
    pub fn next_packet(&mut self) -> Option<Packet<'_>> {
        self.next_split().map(|(packet, _)| packet)
    }

    /// [`next_packet`](Self::next_packet), with the [detached range](Self::detach_range) of the
    /// frame it yields, if it had one: then [`Packet::Frame`]'s `bytes` are the body without
    /// the range (`length - range.bytes.len()` bytes, the range cut out at `range.at`).
    pub fn next_split(&mut self) -> Option<(Packet<'_>, Option<Detached>)> {
        if let Some((number, length)) = self.pending_too_long.take() {
            return Some((Packet::TooLong { number, length }, None));
        }
        if self.skipping.is_some() {
            return None;
        }
        let length = self.announced()?;
        if let Some(r) = &self.detached {
            let rest = length - r.len;
            if r.lacking() > 0 || self.held() - FRAME_HEADER_BYTES < rest {
                return None;
            }
            let range = self.detached.take().map(|r| r.range);
            self.frame += 1;
            let body = self.start + FRAME_HEADER_BYTES;
            self.start = body + rest;
            return Some((Packet::Frame { number: self.frame, bytes: &self.buf[body..body + rest] }, range));
        }
        let have = self.held() - FRAME_HEADER_BYTES;
        if length > self.max_frame_bytes {
            self.frame += 1;
            let number = self.frame;
            if have >= length {
                self.start += FRAME_HEADER_BYTES + length;
                return Some((Packet::TooLong { number, length }, None));
            }
            // Drop what arrived of it and skip the rest as it comes.
            self.skipping = Some((number, length, length - have));
            self.start = 0;
            self.end = 0;
            return None;
        }
        if have < length {
            return None;
        }
        self.frame += 1;
        let body = self.start + FRAME_HEADER_BYTES;
        self.start = body + length;
        Some((Packet::Frame { number: self.frame, bytes: &self.buf[body..body + length] }, None))
    }

    /// The frame being received, once its header has arrived and while its body has not all
    /// arrived: the length its header announced and the body bytes held so far. `None` for an
    /// over-long frame (being skipped), while a packet is ready to be drained, and once a range
    /// of the frame is [detached](Self::detach_range).
    pub fn partial_frame(&self) -> Option<(usize, &[u8])> {
        if self.skipping.is_some() || self.pending_too_long.is_some() || self.detached.is_some() {
            return None;
        }
        let length = self.announced()?;
        let body = self.start + FRAME_HEADER_BYTES;
        let held = self.end - body;
        (length <= self.max_frame_bytes && held < length).then(|| (length, &self.buf[body..self.end]))
    }

    /// Receives body bytes `at..at + len` of the [frame being received](Self::partial_frame)
    /// into a `Vec` of their own, handed out with the frame by [`next_split`](Self::next_split):
    /// what of the range has arrived is moved there now, and [`read_space`](Self::read_space)
    /// is the rest of the range until it has all arrived, so the range's bytes are read straight
    /// into the memory they are handed out in. The `Vec` is the range's length, within the
    /// frame, within the limit: memory stays bounded as without it.
    ///
    /// Returns whether the range was detached: not if there is no frame being received, a range
    /// is detached already, the range starts past the body bytes held (`at` greater than them)
    /// or ends past the frame's body.
    pub fn detach_range(&mut self, at: usize, len: usize) -> bool {
        let Some((length, held)) = self.partial_frame() else { return false };
        let held = held.len();
        if at > held || at.checked_add(len).is_none_or(|end| end > length) {
            return false;
        }
        let mut bytes = Vec::with_capacity(len);
        let body = self.start + FRAME_HEADER_BYTES;
        let arrived = (held - at).min(len);
        bytes.extend_from_slice(&self.buf[body + at..body + at + arrived]);
        // Bytes after the range (it ended within what is held): closed up behind its cut.
        self.buf.copy_within(body + at + arrived..self.end, body + at);
        self.end -= arrived;
        self.detached = Some(Receiving { range: Detached { at, bytes }, filled: arrived, len, appending: false });
        true
    }

    /// The [detached range](Self::detach_range) being received, while some of it is still to
    /// come: a `Vec` holding what arrived of it (its length) with room reserved for the rest,
    /// and how many bytes the range still lacks, to append the range's next bytes to in place
    /// of [`read_space`](Self::read_space) and [`commit`](Self::commit). A reader that fills a
    /// `Vec`'s spare capacity through a limit (`Read::take(lacking).read_to_end`, tokio's
    /// `take(lacking).read_buf`) so receives the range into memory that is never zeroed first.
    /// Say it is done with [`appended`](Self::appended); append no more than the range lacks
    /// (the `Vec`'s capacity may be more). Keep to one way per range: asking for this after
    /// `read_space` gives up the room `read_space` zeroed, and the next `read_space` zeroes the
    /// rest of the range again (at every read, that is quadratic in the range's length).
    pub fn detached_rest(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        let r = self.detached.as_mut().filter(|r| r.lacking() > 0)?;
        r.range.bytes.truncate(r.filled);
        r.appending = true;
        let lacking = r.lacking();
        Some((&mut r.range.bytes, lacking))
    }

    /// Takes in what was appended to [`detached_rest`](Self::detached_rest) since it was asked
    /// for. Returns how many bytes that was.
    ///
    /// # Panics
    /// If more was appended than the range lacked, or bytes that had arrived were taken away: a
    /// caller's bug, not a property of the input.
    pub fn appended(&mut self) -> usize {
        let Some(r) = self.detached.as_mut().filter(|r| r.appending) else { return 0 };
        r.appending = false;
        let now = r.range.bytes.len();
        assert!(now >= r.filled, "{} bytes of the detached range were taken away", r.filled - now);
        assert!(now <= r.len, "appended {} bytes past the detached range", now - r.len);
        let n = now - r.filled;
        r.filled = now;
        n
    }

    /// At end of input: what is left, if anything: a frame still to be drained, or the frame
    /// the stream ended inside of ([`Packet::Cut`]). The decoder is empty afterwards.
    ///
    /// A frame with a [detached range](Self::detach_range) is yielded without it: call
    /// [`finish_split`](Self::finish_split) to have it.
    pub fn finish(&mut self) -> Option<Packet<'_>> {
        self.finish_split().map(|(packet, _)| packet)
    }

    /// [`finish`](Self::finish), with a frame's [detached range](Self::detach_range) as
    /// [`next_split`](Self::next_split) gives it. A frame cut inside (or after) its detached
    /// range is [`Packet::Cut`], counting the range's bytes that arrived.
    pub fn finish_split(&mut self) -> Option<(Packet<'_>, Option<Detached>)> {
        let complete = self.pending_too_long.is_some()
            || (self.skipping.is_none()
                && self
                    .announced()
                    .is_some_and(|n| n > self.max_frame_bytes || self.buffered() - FRAME_HEADER_BYTES >= n));
        if complete {
            return self.next_split();
        }
        if let Some((number, length, left)) = self.skipping.take() {
            return Some((Packet::Cut { number, received: length - left, length: Some(length) }, None));
        }
        let held = self.buffered();
        if held == 0 {
            return None;
        }
        let length = self.announced();
        self.start = 0;
        self.end = 0;
        self.detached = None;
        self.frame += 1;
        let received = if length.is_some() { held - FRAME_HEADER_BYTES } else { held };
        Some((Packet::Cut { number: self.frame, received, length }, None))
    }

    /// The length in the header at the start of the unconsumed bytes, once all of it arrived.
    fn announced(&self) -> Option<usize> {
        if self.held() < FRAME_HEADER_BYTES {
            return None;
        }
        let header = self.buf.get(self.start..self.start + FRAME_HEADER_BYTES)?;
        let header: [u8; FRAME_HEADER_BYTES] = header.try_into().ok()?;
        // A u32 always fits the usize of the platforms this builds for (32 and 64 bits).
        usize::try_from(u32::from_le_bytes(header)).ok()
    }
}

/// `body` with its 4-byte little-endian length header in front: one frame of the stream.
///
/// # Errors
/// The body is longer than a header can announce (`u32::MAX` bytes); nothing is written.
pub fn write_frame(out: &mut Vec<u8>, body: &[u8]) -> Result<(), crate::ProtocolError> {
    let length = u32::try_from(body.len())
        .map_err(|_| crate::ProtocolError::FrameTooLong { length: body.len(), limit: u32::MAX as usize })?;
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, body).unwrap_or_default();
        out
    }

    fn show(p: Packet<'_>) -> String {
        match p {
            Packet::Frame { number, bytes } => format!("{number}:{}", String::from_utf8_lossy(bytes)),
            Packet::TooLong { number, length } => format!("{number}:too long ({length})"),
            Packet::Cut { number, received, length: None } => format!("{number}:cut in header ({received})"),
            Packet::Cut { number, received, length: Some(l) } => format!("{number}:cut ({received} of {l})"),
        }
    }

    /// Feeds `chunks`, then finishes; returns each packet as a readable string.
    fn decode(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            d.feed(chunk);
            while let Some(p) = d.next_packet() {
                out.push(show(p));
            }
            assert!(d.buffered() <= max + FRAME_HEADER_BYTES, "buffer grew past the bound: {}", d.buffered());
        }
        while let Some(p) = d.finish() {
            out.push(show(p));
        }
        out
    }

    /// `decode`, reading in place (`read_space` + `commit`) instead of `feed`.
    fn decode_in_place(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let space = d.read_space(chunk.len());
            assert!(space.len() >= chunk.len(), "{} bytes of room for a {}-byte chunk", space.len(), chunk.len());
            space[..chunk.len()].copy_from_slice(chunk);
            d.commit(chunk.len());
            while let Some(p) = d.next_packet() {
                out.push(show(p));
            }
            assert!(d.buffered() <= max + FRAME_HEADER_BYTES, "buffer grew past the bound: {}", d.buffered());
        }
        while let Some(p) = d.finish() {
            out.push(show(p));
        }
        out
    }

    #[test]
    fn reading_in_place_yields_what_feeding_yields_at_every_split() {
        let input = [frame(b"hello"), frame(b""), frame(&[b'x'; 300]), frame(b"123456789"), frame(b"last"), vec![9, 0]]
            .concat();
        for max in [4, 8, 1000] {
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(decode_in_place(max, &[a, b]), decode(max, &[a, b]), "limit {max}, cut at {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_in_place(max, &bytes), decode(max, &bytes), "limit {max}, byte by byte");
        }
        assert_eq!(
            decode_in_place(8, &[&input]),
            ["1:hello", "2:", "3:too long (300)", "4:too long (9)", "5:last", "6:cut in header (2)"]
        );
    }

    #[test]
    fn read_space_covers_the_rest_of_a_frame_whose_header_arrived() {
        let mut d = FrameDecoder::new(1 << 20);
        let big = frame(&[7; 100_000]);
        let space = d.read_space(16);
        space[..10].copy_from_slice(&big[..10]);
        d.commit(10);
        assert_eq!(d.next_packet(), None);
        let space = d.read_space(16);
        assert!(space.len() >= big.len() - 10, "{} bytes of room, {} lacking", space.len(), big.len() - 10);
        space[..big.len() - 10].copy_from_slice(&big[10..]);
        d.commit(big.len() - 10);
        assert_eq!(d.next_packet(), Some(Packet::Frame { number: 1, bytes: &[7; 100_000][..] }));
        assert_eq!(d.buffered(), 0);
        // Over the limit: no room is made for it, only what was asked for.
        let mut d = FrameDecoder::new(8);
        let space = d.read_space(4);
        space[..4].copy_from_slice(&100_000u32.to_le_bytes());
        d.commit(4);
        assert_eq!(d.next_packet(), None);
        assert!(d.read_space(4).len() < 1000);
    }

    #[test]
    #[should_panic(expected = "past the read space")]
    fn committing_more_than_the_read_space_is_a_bug() {
        let mut d = FrameDecoder::new(8);
        let room = d.read_space(4).len();
        d.commit(room + 1);
    }

    /// How a test receives a detached range: through `read_space`/`commit`, through
    /// `detached_rest`/`appended` (what a reader into spare capacity does), or through `feed`.
    #[derive(Clone, Copy, Debug)]
    enum Way {
        Space,
        Append,
        Feed,
    }

    /// Decodes `chunks`, detaching body range `at..at + len` of every frame at least `at` long
    /// as soon as its first `at` bytes are held; each packet as `show` gives it, a split frame
    /// as `number:prefix+suffix|range`.
    fn decode_detaching(max: usize, chunks: &[&[u8]], at: usize, len: usize, way: Way) -> Vec<String> {
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        let show_split = |(p, range): (Packet<'_>, Option<Detached>)| match (p, range) {
            (Packet::Frame { number, bytes }, Some(r)) => {
                assert_eq!(r.at, at);
                format!("{number}:{}|{}", String::from_utf8_lossy(bytes), String::from_utf8_lossy(&r.bytes))
            }
            (p, None) => show(p),
            (p, Some(_)) => panic!("a range beside {p:?}"),
        };
        for chunk in chunks {
            let mut chunk: &[u8] = chunk;
            while !chunk.is_empty() {
                let n = match (way, d.detached_rest()) {
                    (Way::Append, Some((rest, lacking))) => {
                        let n = chunk.len().min(lacking);
                        rest.extend_from_slice(&chunk[..n]);
                        assert_eq!(d.appended(), n);
                        n
                    }
                    (Way::Feed, _) => {
                        d.feed(chunk);
                        chunk.len()
                    }
                    _ => {
                        let space = d.read_space(chunk.len());
                        let n = space.len().min(chunk.len());
                        space[..n].copy_from_slice(&chunk[..n]);
                        d.commit(n);
                        n
                    }
                };
                chunk = &chunk[n..];
                while let Some(p) = d.next_split() {
                    out.push(show_split(p));
                }
                if let Some((length, held)) = d.partial_frame() {
                    if length >= at + len && held.len() >= at {
                        assert!(d.detach_range(at, len), "detaching {at}..{} of a {length}-byte frame", at + len);
                    }
                }
                assert!(d.buffered() <= max + FRAME_HEADER_BYTES, "buffer grew past the bound: {}", d.buffered());
            }
        }
        while let Some(p) = d.finish_split() {
            out.push(show_split(p));
        }
        out
    }

    /// A split frame's output (`number:prefix+suffix|range`, range cut out at `at`) made whole.
    fn unsplit(shown: &str, at: usize) -> String {
        let Some((frame, range)) = shown.split_once('|') else { return shown.to_owned() };
        let (number, rest) = frame.split_once(':').unwrap_or_default();
        format!("{number}:{}{range}{}", &rest[..at], &rest[at..])
    }

    #[test]
    fn a_detached_range_arrives_apart_from_its_frame_at_every_split_and_by_every_way() {
        // Frames of 3 + 5 + 2 bytes (the middle detached), one too short to detach, one of
        // 3 + 5 + 3, an over-long one, and a last one cut inside its range.
        let input = [
            frame(b"abcRANGEyz"),
            frame(b"ab"),
            frame(b"pqrSTUVWXuv"),
            frame(&[b'x'; 40]),
            frame(b"klmNOPQRSt")[..9].to_vec(),
        ]
        .concat();
        for way in [Way::Space, Way::Append, Way::Feed] {
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                let got: Vec<String> = decode_detaching(20, &[a, b], 3, 5, way).iter().map(|p| unsplit(p, 3)).collect();
                assert_eq!(got, decode(20, &[a, b]), "{way:?}, cut at {cut}");
            }
            // Byte by byte, every frame long enough is split.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                decode_detaching(20, &bytes, 3, 5, way),
                ["1:abcyz|RANGE", "2:ab", "3:pqrXuv|STUVW", "4:too long (40)", "5:cut (5 of 10)"],
                "{way:?}"
            );
        }
    }

    #[test]
    fn a_range_ending_the_frame_or_already_held_is_detached_too() {
        // The range is the frame's last bytes; and a range that arrived whole with the frame's
        // first bytes (the bytes after it close up behind the cut).
        let input = frame(b"abRANGE");
        assert_eq!(decode_detaching(100, &[&input[..6], &input[6..]], 2, 5, Way::Space), ["1:ab|RANGE"]);
        let input = frame(b"abRANGEtail");
        let (a, b) = input.split_at(input.len() - 2);
        assert_eq!(decode_detaching(100, &[a, b], 2, 5, Way::Append), ["1:abtail|RANGE"]);
        // A frame that arrives whole is never partial: nothing to detach.
        assert_eq!(decode_detaching(100, &[&input], 2, 5, Way::Append), ["1:abRANGEtail"]);
    }

    #[test]
    fn only_a_frame_being_received_within_the_limit_and_its_own_bytes_can_be_detached() {
        let mut d = FrameDecoder::new(10);
        assert_eq!(d.partial_frame(), None, "nothing held");
        assert!(!d.detach_range(0, 1));
        d.feed(&[5, 0, 0]);
        assert_eq!(d.partial_frame(), None, "the header is not whole");
        d.feed(&[0, b'a', b'b']);
        assert_eq!(d.partial_frame(), Some((5, &b"ab"[..])));
        assert!(!d.detach_range(3, 1), "it starts past the bytes held");
        assert!(!d.detach_range(1, 5), "it ends past the body");
        assert!(!d.detach_range(usize::MAX, 2), "it overflows");
        assert!(d.detach_range(2, 3));
        assert!(!d.detach_range(2, 3), "a range is detached already");
        assert_eq!(d.partial_frame(), None);
        d.feed(b"cde");
        let (p, range) = d.next_split().unwrap_or((Packet::Cut { number: 0, received: 0, length: None }, None));
        assert_eq!(p, Packet::Frame { number: 1, bytes: b"ab" });
        assert_eq!(range, Some(Detached { at: 2, bytes: b"cde".to_vec() }));
        // Over the limit: skipped, never offered.
        d.feed(&[11, 0, 0, 0, b'x']);
        assert_eq!(d.next_packet(), None);
        assert_eq!(d.partial_frame(), None);
        assert!(!d.detach_range(0, 1));
        // A whole frame waiting to be drained is not partial.
        let mut d = FrameDecoder::new(10);
        d.feed(&frame(b"ok"));
        assert_eq!(d.partial_frame(), None);
        assert_eq!(d.detached_rest(), None);
        assert_eq!(d.appended(), 0);
    }

    #[test]
    fn next_packet_and_finish_yield_a_split_frame_without_its_range() {
        let mut d = FrameDecoder::new(100);
        d.feed(&frame(b"abRANGEz")[..6]);
        assert!(d.detach_range(2, 5));
        d.feed(b"RANGEz");
        assert_eq!(d.next_packet(), Some(Packet::Frame { number: 1, bytes: b"abz" }));
        d.feed(&frame(b"abRANGEz")[..8]);
        assert!(d.detach_range(2, 5));
        assert_eq!(d.buffered(), 8, "header, 2 bytes held, 2 of the range");
        assert_eq!(d.finish(), Some(Packet::Cut { number: 2, received: 4, length: Some(8) }));
        assert_eq!(d.finish(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn read_space_while_a_range_arrives_is_the_rest_of_the_range() {
        let mut d = FrameDecoder::new(1 << 20);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let whole = frame(&body);
        d.feed(&whole[..20]);
        assert!(d.detach_range(10, 90_000));
        assert_eq!(d.read_space(64).len(), 90_000 - 6, "the range's bytes still to come");
        let rest = d.detached_rest().map(|(v, lacking)| (v.len(), v.capacity() >= 90_000, lacking));
        assert_eq!(rest, Some((6, true, 90_000 - 6)), "what arrived, room for the rest, never zeroed");
        d.feed(&whole[20..]);
        let (p, range) = d.next_split().unwrap_or((Packet::Cut { number: 0, received: 0, length: None }, None));
        assert_eq!(p, Packet::Frame { number: 1, bytes: &[&body[..10], &body[90_010..]].concat()[..] });
        assert_eq!(range.map(|r| r.bytes), Some(body[10..90_010].to_vec()));
    }

    #[test]
    #[should_panic(expected = "of the detached range were taken away")]
    fn taking_arrived_bytes_out_of_the_range_is_a_bug() {
        let mut d = FrameDecoder::new(100);
        d.feed(&frame(b"abcdef")[..7]);
        assert!(d.detach_range(1, 3));
        if let Some((rest, _)) = d.detached_rest() {
            rest.clear();
        }
        d.appended();
    }

    #[test]
    #[should_panic(expected = "past the detached range")]
    fn appending_past_the_range_is_a_bug() {
        let mut d = FrameDecoder::new(100);
        d.feed(&frame(b"abcdef")[..5]);
        assert!(d.detach_range(1, 3));
        if let Some((rest, _)) = d.detached_rest() {
            rest.extend_from_slice(b"toolong");
        }
        d.appended();
    }

    #[test]
    fn splits_frames_and_numbers_them_empty_ones_included() {
        let input = [frame(b"a"), frame(b""), frame(b"ccc")].concat();
        assert_eq!(decode(100, &[&input]), ["1:a", "2:", "3:ccc"]);
    }

    #[test]
    fn splits_frames_across_chunks_at_every_byte() {
        let input = [frame(b"hello"), frame(b""), frame(&[b'x'; 300]), frame(b"last")].concat();
        let want = ["1:hello".to_owned(), "2:".to_owned(), format!("3:{}", "x".repeat(300)), "4:last".to_owned()];
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(decode(1000, &[a, b]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(1000, &bytes), want);
    }

    #[test]
    fn reports_over_long_frame_with_its_length_and_goes_on() {
        let input = [frame(b"12345"), frame(b"ok"), frame(b"1234")].concat();
        assert_eq!(decode(4, &[&input]), ["1:too long (5)", "2:ok", "3:1234"]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(4, &bytes), ["1:too long (5)", "2:ok", "3:1234"]);
    }

    #[test]
    fn over_long_frame_is_skipped_as_it_arrives() {
        let mut d = FrameDecoder::new(8);
        let length = 10 + 1024 * 1000 + 2;
        d.feed(&[frame(b"ok"), (length as u32).to_le_bytes().to_vec(), b"0123456789".to_vec()].concat());
        assert_eq!(d.next_packet(), Some(Packet::Frame { number: 1, bytes: b"ok" }));
        assert_eq!(d.next_packet(), None);
        assert_eq!(d.buffered(), 0, "an over-long frame is dropped, not kept");
        for _ in 0..1000 {
            d.feed(&[b'x'; 1024]);
            assert_eq!(d.next_packet(), None);
            assert_eq!(d.buffered(), 0);
        }
        d.feed(&[b"yz".to_vec(), frame(b"next")].concat());
        assert_eq!(d.next_packet(), Some(Packet::TooLong { number: 2, length }));
        assert_eq!(d.next_packet(), Some(Packet::Frame { number: 3, bytes: b"next" }));
        assert_eq!(d.next_packet(), None);
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_reported_as_cut() {
        assert_eq!(decode(100, &[&[frame(b"a"), vec![3, 0]].concat()]), ["1:a", "2:cut in header (2)"]);
        assert_eq!(decode(100, &[&[frame(b"a"), frame(b"abc")[..5].to_vec()].concat()]), ["1:a", "2:cut (1 of 3)"]);
        assert_eq!(decode(100, &[&[3, 0, 0, 0]]), ["1:cut (0 of 3)"]);
        assert_eq!(decode(2, &[&frame(b"abcdef")[..7]]), ["1:cut (3 of 6)"]);
        assert_eq!(decode(2, &[&frame(b"abcdef")[..4]]), ["1:cut (0 of 6)"]);
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert!(decode(100, &[]).is_empty());
        assert!(decode(100, &[b""]).is_empty());
    }

    #[test]
    fn zero_limit_answers_only_empty_frames() {
        assert_eq!(decode(0, &[&[frame(b""), frame(b"a")].concat()]), ["1:", "2:too long (1)"]);
    }

    #[test]
    fn the_largest_header_is_a_length_not_an_overflow() {
        assert_eq!(decode(8, &[&[0xff, 0xff, 0xff, 0xff, 1, 2]]), ["1:cut (2 of 4294967295)"]);
    }
}
