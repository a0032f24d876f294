//! Shared helpers for the integration tests: the conformance vectors and process checks.
#![allow(dead_code, missing_docs)]

use rust_ts_ipc::{ResponderOptions, Services};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Vectors {
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub options: CaseOptions,
    pub input: Vec<InputLine>,
    pub replies: Vec<String>,
    pub done: bool,
    #[serde(default = "yes")]
    pub pipe: bool,
    /// The services the responder under test answers; absent = `["demo"]`.
    pub services: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, Clone)]
pub struct CaseOptions {
    pub exit_after: Option<u64>,
    pub name: Option<String>,
    pub max_line_bytes: Option<usize>,
}

impl CaseOptions {
    /// The options with the demo service only: use [`Case::responder`] for the case's services.
    pub fn responder(&self) -> ResponderOptions {
        let d = ResponderOptions::default();
        ResponderOptions {
            exit_after: self.exit_after.unwrap_or(d.exit_after),
            name: self.name.clone().unwrap_or(d.name),
            max_line_bytes: self.max_line_bytes.unwrap_or(d.max_line_bytes),
            services: Services::DEMO,
            max_frame_bytes: d.max_frame_bytes,
        }
    }

    /// The same options as `serve` / `main.js` command-line flags.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.exit_after {
            args.extend(["--exit-after".to_owned(), n.to_string()]);
        }
        if let Some(name) = &self.name {
            args.extend(["--name".to_owned(), name.clone()]);
        }
        if let Some(n) = self.max_line_bytes {
            args.extend(["--max-line-bytes".to_owned(), n.to_string()]);
        }
        args
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum InputLine {
    Text(String),
    Bytes { base64: String },
}

impl InputLine {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            InputLine::Text(s) => s.as_bytes().to_vec(),
            InputLine::Bytes { base64 } => decode_base64(base64),
        }
    }
}

impl Case {
    /// The services the case's responder answers (absent = demo only).
    pub fn services(&self) -> Services {
        match &self.services {
            None => Services::DEMO,
            Some(names) => Services::from_names(names.iter().map(String::as_str))
                .unwrap_or_else(|e| panic!("case {:?}: services: {e}", self.name)),
        }
    }

    /// Whether an implementation that answers only the demo (the TypeScript responder) can run it.
    pub fn demo_only(&self) -> bool {
        self.services() == Services::DEMO
    }

    /// The responder options for the case, its services included.
    pub fn responder(&self) -> ResponderOptions {
        ResponderOptions { services: self.services(), ..self.options.responder() }
    }

    /// The case as `rust-ts-ipc serve` arguments, `--services` always given (its default is both).
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = vec!["serve".to_owned(), "--services".to_owned(), self.services().to_string()];
        args.extend(self.options.cli_args());
        args
    }

    pub fn lines(&self) -> Vec<Vec<u8>> {
        self.input.iter().map(InputLine::bytes).collect()
    }

    /// The byte stream: lines joined by `\n`, with a final `\n`.
    pub fn stream(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in self.lines() {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        out
    }

    pub fn expected_output(&self) -> String {
        self.replies.iter().map(|r| format!("{r}\n")).collect()
    }
}

pub fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap_or_else(|| panic!("bad base64 {s:?}"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// --- The MessagePack vectors (tests/conformance-msgpack.json) --------------------------------

pub const MSGPACK_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance-msgpack.json");

#[derive(serde::Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MsgpackVectors {
    pub description: String,
    pub cases: Vec<MsgpackCase>,
}

#[derive(serde::Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MsgpackCase {
    pub name: String,
    /// The services answered; absent = `["demo"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "MsgpackOptions::is_default")]
    pub options: MsgpackOptions,
    /// Frame bodies in hex; each is sent with its 4-byte little-endian length in front.
    pub input: Vec<String>,
    /// Raw bytes in hex sent after the frames (a cut frame), if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tail: String,
    pub replies: Vec<MsgpackReply>,
    pub done: bool,
}

#[derive(serde::Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct MsgpackOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<usize>,
}

impl MsgpackOptions {
    fn is_default(&self) -> bool {
        *self == MsgpackOptions::default()
    }
}

/// One reply: its exact bytes (length header included) and a readable rendering.
#[derive(serde::Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MsgpackReply {
    pub hex: String,
    /// `{"msg_type", "data", "id"?}`; bytes data as `{"bin": "<hex>"}`.
    pub json: serde_json::Value,
}

impl MsgpackCase {
    pub fn services(&self) -> Services {
        match &self.services {
            None => Services::DEMO,
            Some(names) => Services::from_names(names.iter().map(String::as_str)).unwrap(),
        }
    }

    pub fn responder(&self) -> ResponderOptions {
        let d = ResponderOptions::default();
        ResponderOptions {
            exit_after: self.options.exit_after.unwrap_or(d.exit_after),
            max_frame_bytes: self.options.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            services: self.services(),
            ..d
        }
    }

    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.input.iter().map(|h| unhex(h)).collect()
    }

    /// The byte stream: every frame with its header, then the tail.
    pub fn stream(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in self.frames() {
            rust_ts_ipc::write_frame(&mut out, &frame).unwrap();
        }
        out.extend(unhex(&self.tail));
        out
    }

    pub fn expected_output(&self) -> Vec<u8> {
        self.replies.iter().flat_map(|r| unhex(&r.hex)).collect()
    }

    /// `rust-ts-ipc serve` arguments for the case.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = vec!["serve".into(), "--encoding".into(), "msgpack".into()];
        args.extend(["--services".into(), self.services().to_string()]);
        if let Some(n) = self.options.exit_after {
            args.extend(["--exit-after".into(), n.to_string()]);
        }
        if let Some(n) = self.options.max_frame_bytes {
            args.extend(["--max-frame-bytes".into(), n.to_string()]);
        }
        args
    }
}

pub fn msgpack_vectors() -> MsgpackVectors {
    let text = std::fs::read_to_string(MSGPACK_VECTORS).unwrap_or_else(|e| panic!("reading {MSGPACK_VECTORS}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {MSGPACK_VECTORS}: {e}"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Splits a stream of reply frames into frames (header included).
pub fn split_frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(bytes[..4 + n].to_vec());
        bytes = &bytes[4 + n..];
    }
    out
}

/// The readable rendering of one reply frame (header included).
pub fn render(frame: &[u8]) -> serde_json::Value {
    let e = rust_ts_ipc::decode_msgpack_envelope(&frame[4..]).unwrap();
    let data = match e.data.as_bytes() {
        Some(b) => serde_json::json!({ "bin": hex(b) }),
        None => e.data.as_json().unwrap().clone(),
    };
    let mut v = serde_json::json!({ "msg_type": e.msg_type, "data": data });
    if let Some(id) = e.id {
        v["id"] = id.into();
    }
    v
}
