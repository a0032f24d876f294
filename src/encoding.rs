//! Which wire encoding a stream uses.

use std::fmt;
use std::str::FromStr;

/// How messages travel on a stream: chosen explicitly by both ends (`--encoding`), never
/// sniffed. The default is [`Encoding::Json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Newline-delimited JSON: one object per line ([`crate::LineDecoder`]).
    #[default]
    Json,
    /// MessagePack frames: a 4-byte little-endian length, then one map of that many bytes
    /// ([`crate::FrameDecoder`]). `data` may be raw bytes (`bin`).
    Msgpack,
}

impl Encoding {
    /// `json` or `msgpack`, as `--encoding` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Msgpack => "msgpack",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An encoding name that is neither `json` nor `msgpack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEncoding {
    /// The start of the name given.
    pub name: String,
}

impl fmt::Display for UnknownEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown encoding `{}`; expected json or msgpack", self.name)
    }
}

impl std::error::Error for UnknownEncoding {}

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    /// `json` or `msgpack`.
    fn from_str(name: &str) -> Result<Self, UnknownEncoding> {
        match name {
            "json" => Ok(Encoding::Json),
            "msgpack" => Ok(Encoding::Msgpack),
            other => Err(UnknownEncoding { name: crate::excerpt(other) }),
        }
    }
}
