//! The msgpack hot path allocates nothing of its own: answering a small frame, or encoding a
//! small envelope, into a buffer that already has room makes no heap allocation (a malloc and
//! a free per `str` header or per `id` are a measurable part of a 64 B message's cost).
//!
//! Counted by a global allocator that only counts this thread's calls (the one `unsafe` here:
//! a `GlobalAlloc` impl forwarding to `System`; the library itself has none).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rust_ts_ipc::{Data, Envelope, FrameOut, Packet, Responder, ResponderOptions, Services, MAX_SAFE_ID};

thread_local! {
    /// Allocations made by this thread (const-initialised: reading it never allocates).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counter is a thread-local `Cell` that needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Ids in every width a `uint` takes (fixint, uint8/16/32/64), and none.
const IDS: [Option<u64>; 7] =
    [None, Some(0x7f), Some(0x80), Some(0x100), Some(0x1_0000), Some(0x1_0000_0000), Some(MAX_SAFE_ID)];

#[test]
fn answering_a_small_msgpack_frame_into_a_buffer_with_room_allocates_nothing() {
    let requests: Vec<Vec<u8>> = IDS
        .iter()
        .flat_map(|&id| {
            [
                Envelope { msg_type: "data".to_owned(), data: Data::from("x".repeat(64)), id },
                Envelope { msg_type: "greeting".to_owned(), data: Data::from(""), id },
                Envelope { msg_type: "bytes".to_owned(), data: Data::Bytes(vec![7; 300]), id },
            ]
        })
        .map(|e| e.to_frame().unwrap())
        .collect();
    let mut responder =
        Responder::new(ResponderOptions { services: Services::ALL, exit_after: 0, ..Default::default() });
    let mut out = Vec::with_capacity(64 * 1024);
    for request in &requests {
        let packet = Packet::Frame { number: 1, bytes: &request[4..] };
        let (mut flat, mut vectored) = (0, 0);
        for _ in 0..3 {
            out.clear();
            flat = allocations(|| responder.handle_packet(packet, &mut out));
            out.clear();
            vectored = allocations(|| responder.handle_packet_vectored(packet, &mut FrameOut::new(&mut out)));
        }
        let reply = rust_ts_ipc::decode_msgpack_envelope(&out[4..]).unwrap();
        assert_ne!(reply.msg_type, "error", "{:?}", reply.data);
        assert_eq!((flat, vectored), (0, 0), "allocations answering {:?}", reply.msg_type);
    }
}

#[test]
fn encoding_a_small_envelope_into_a_buffer_with_room_allocates_nothing() {
    let mut out = Vec::with_capacity(4096);
    for id in IDS {
        for data in
            [Data::from("a string of some length"), Data::Bytes(vec![1; 40]), Data::from(serde_json::json!([1, "x"]))]
        {
            let envelope = Envelope { msg_type: "reply".to_owned(), data, id };
            out.clear();
            envelope.encode_frame_into(&mut out).unwrap();
            out.clear();
            assert_eq!(allocations(|| envelope.encode_frame_into(&mut out).unwrap()), 0, "{envelope:?}");
        }
    }
}
