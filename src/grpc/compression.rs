//! Message compression: `identity`, `gzip` and `deflate` (zlib, as grpc-go and grpc-core use).
//!
//! Decompression is bounded: output beyond the receive limit is never produced, so a small
//! compressed message that would inflate to gigabytes costs at most the limit.

use std::io::{Read, Write};

use bytes::Bytes;

use super::status::Status;

/// The `grpc-accept-encoding` value this implementation advertises.
pub const ACCEPT_ENCODING: &str = "identity,deflate,gzip";

/// A message encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
    /// zlib-wrapped deflate (RFC 1950), which is what gRPC calls `deflate`.
    Deflate,
}

/// A set of encodings: those a peer lists in `grpc-accept-encoding` (one byte, where a list
/// would cost every call an allocation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encodings(u8);

impl Encodings {
    /// Every supported encoding listed in a `grpc-accept-encoding` value; unknown names are
    /// skipped.
    pub fn listed_in(accept: &str) -> Encodings {
        accept
            .split(',')
            .filter_map(Encoding::from_name)
            .fold(Encodings::default(), Encodings::with)
    }

    /// This set and `encoding`.
    pub fn with(self, encoding: Encoding) -> Encodings {
        Encodings(self.0 | Encodings::bit(encoding))
    }

    /// Both sets.
    pub fn union(self, other: Encodings) -> Encodings {
        Encodings(self.0 | other.0)
    }

    /// Whether `encoding` is in the set.
    pub fn contains(self, encoding: Encoding) -> bool {
        self.0 & Encodings::bit(encoding) != 0
    }

    /// The best compressing encoding in the set, if any.
    pub fn preferred(self) -> Option<Encoding> {
        [Encoding::Gzip, Encoding::Deflate]
            .into_iter()
            .find(|e| self.contains(*e))
    }

    fn bit(encoding: Encoding) -> u8 {
        match encoding {
            Encoding::Identity => 1,
            Encoding::Gzip => 2,
            Encoding::Deflate => 4,
        }
    }
}

impl Encoding {
    /// The encoding named by a `grpc-encoding` value; `None` for one we do not support.
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name.trim() {
            "identity" => Some(Encoding::Identity),
            "gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            _ => None,
        }
    }

    /// The name used in `grpc-encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }

    /// Compresses a payload.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, Status> {
        let fail = |e: std::io::Error| Status::internal(format!("compression failed: {e}"));
        match self {
            Encoding::Identity => Ok(data.to_vec()),
            Encoding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(data).map_err(fail)?;
                w.finish().map_err(fail)
            }
            Encoding::Deflate => {
                let mut w =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(data).map_err(fail)?;
                w.finish().map_err(fail)
            }
        }
    }

    /// Decompresses a payload, refusing (RESOURCE_EXHAUSTED) output longer than `max` bytes and
    /// failing (INTERNAL) on corrupt input.
    pub fn decompress(self, data: Bytes, max: usize) -> Result<Bytes, Status> {
        let fail = |e: std::io::Error| {
            Status::internal(format!("{} decompression failed: {e}", self.name()))
        };
        match self {
            Encoding::Identity => Ok(data),
            Encoding::Gzip => {
                read_bounded(flate2::read::GzDecoder::new(&data[..]), max).map_err(fail)?
            }
            Encoding::Deflate => {
                read_bounded(flate2::read::ZlibDecoder::new(&data[..]), max).map_err(fail)?
            }
        }
    }
}

/// Reads `reader` to its end into a buffer that never holds more than `max` bytes of room: it
/// grows by doubling but is capped at `max` (`read_to_end` would double past it, to twice the
/// limit, while refusing a bomb). More than `max` bytes is RESOURCE_EXHAUSTED.
fn read_bounded(
    mut reader: impl Read,
    max: usize,
) -> Result<Result<Bytes, Status>, std::io::Error> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; DECOMPRESS_CHUNK_BYTES];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(Ok(Bytes::from(out))),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if out.len() + n > max {
            return Ok(Err(Status::resource_exhausted(format!(
                "decompressed message larger than max ({max} bytes)"
            ))));
        }
        if out.capacity() - out.len() < n {
            let want = out.capacity().saturating_mul(2).max(out.len() + n).min(max);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// How much decompressed output is read at a time.
const DECOMPRESS_CHUNK_BYTES: usize = 16 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bomb() {
        for e in [Encoding::Gzip, Encoding::Deflate, Encoding::Identity] {
            let data = vec![7u8; 100_000];
            let c = e.compress(&data).unwrap_or_default();
            assert_eq!(
                e.decompress(Bytes::from(c.clone()), 100_000).ok(),
                Some(Bytes::from(data))
            );
            if e != Encoding::Identity {
                assert!(c.len() < 1000);
                let err = e.decompress(Bytes::from(c), 99_999).err().map(|s| s.code());
                assert_eq!(err, Some(super::super::status::Code::ResourceExhausted));
            }
        }
        let listed = Encodings::listed_in("identity, deflate");
        assert_eq!(listed.preferred(), Some(Encoding::Deflate));
        assert!(listed.contains(Encoding::Identity) && !listed.contains(Encoding::Gzip));
        assert_eq!(Encodings::listed_in("snappy").preferred(), None);
        assert_eq!(
            listed.union(Encodings::listed_in("gzip")).preferred(),
            Some(Encoding::Gzip)
        );
    }
}
