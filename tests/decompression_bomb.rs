//! A compressed message that inflates far past the receive limit is refused with
//! RESOURCE_EXHAUSTED, and refusing it costs the server no more memory than the limit.
//!
//! Alone in its own test binary: it reads this process's memory figures (the server runs in the
//! test process), which other tests running beside it would disturb.

mod common;
mod wire;

use std::io::Read;

use common::TestServer;
use flate2::{Compress, Compression, Crc, FlushCompress};
use h2chat::grpc::codec::DEFAULT_MAX_MESSAGE_BYTES;
use h2chat::grpc::Code;
use wire::{frame, WireClient};

/// What the bomb inflates to: 1 GiB of zeros.
const INFLATED_BYTES: usize = 1 << 30;
/// The bomb is built from this many zeros compressed once and repeated.
const CHUNK_BYTES: usize = 1 << 20;
/// Memory growth allowed on top of the limit: the compressed message itself (~1 MiB), held
/// while it inflates, h2's buffers and the allocator's rounding.
const SLACK_BYTES: usize = 4 << 20;

/// A well-formed gzip member of `INFLATED_BYTES` zeros, about 1 MiB long.
///
/// A raw deflate stream of `CHUNK_BYTES` zeros, ended with a sync flush, is a run of whole
/// non-final blocks that starts with a literal: it inflates to the same zeros after anything, so
/// it can be repeated. A final empty block, the CRC-32 and the length close the member.
fn gzip_bomb() -> Vec<u8> {
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut chunk = Vec::with_capacity(CHUNK_BYTES / 100);
    deflate
        .compress_vec(&zeros, &mut chunk, FlushCompress::Sync)
        .expect("deflate");
    assert_eq!(
        deflate.total_in(),
        CHUNK_BYTES as u64,
        "chunk fully consumed"
    );

    let repeats = INFLATED_BYTES / CHUNK_BYTES;
    let mut crc = Crc::new();
    let mut chunk_crc = Crc::new();
    chunk_crc.update(&zeros);
    for _ in 0..repeats {
        crc.combine(&chunk_crc);
    }

    // Header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..repeats {
        out.extend_from_slice(&chunk);
    }
    // BFINAL=1, BTYPE=01 (fixed Huffman), end-of-block: ten bits, 0x03 0x00.
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(crc.amount()).to_le_bytes());
    out
}

/// A figure (in bytes) from /proc/self/status, e.g. `VmRSS` or `VmHWM`.
fn proc_status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable line {line:?}"));
    kib * 1024
}

/// Resets VmHWM to the current RSS (Linux 4.0+), so that VmHWM afterwards is the peak of what
/// follows.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5")
        .expect("cannot reset VmHWM through /proc/self/clear_refs (Linux 4.0 or later is needed)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_resource_exhausted_and_memory_stays_bounded() {
    let bomb = gzip_bomb();
    let limit = DEFAULT_MAX_MESSAGE_BYTES;
    assert!(
        bomb.len() < limit,
        "the bomb ({} bytes) must pass the length-prefix check",
        bomb.len()
    );
    // It really inflates past the limit (checked on a prefix; inflating all of it is the
    // server's cost, not the test's).
    let mut inflated = 0u64;
    let mut reader = flate2::read::GzDecoder::new(&bomb[..]).take(2 * limit as u64);
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        inflated += n as u64;
    }
    assert_eq!(
        inflated,
        2 * limit as u64,
        "the bomb inflates past the limit"
    );
    drop(buf);
    let payload = frame(true, &bomb);

    let server = TestServer::default().await;
    let mut client = WireClient::connect(server.addr).await;

    let before = proc_status_bytes("VmRSS");
    reset_peak_rss();
    let mut call = client
        .start(
            "/grpc.testing.TestService/UnaryCall",
            &[("grpc-encoding", "gzip")],
        )
        .await;
    call.send(payload, true);
    let (status, _) = call.finish().await;
    let peak = proc_status_bytes("VmHWM");

    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "bomb: {} bytes compressed, {INFLATED_BYTES} inflated; RSS before {before}, peak {peak}, \
         growth {growth} (limit {limit} + slack {SLACK_BYTES})",
        bomb.len()
    );
    assert!(
        growth < limit + SLACK_BYTES,
        "RSS grew by {growth} bytes refusing a bomb; allowed {limit} + {SLACK_BYTES}"
    );
    server.shutdown().await;
}
