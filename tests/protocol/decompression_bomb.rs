//! A compressed message that inflates far past the receive limit is refused with
//! RESOURCE_EXHAUSTED, and refusing it costs the server no more memory than the limit.
//!
//! The server is the `h2chat serve` binary in a process of its own, so that its memory figures in
//! /proc are its own and no other test running beside this one disturbs them.

use crate::support::{within, TEST_PATIENCE};
use std::io::Read;

use crate::support::process::ServerProcess;
use crate::support::wire::{compress, frame, Code, WireClient};
use flate2::{Compress, Compression, Crc, FlushCompress};
use h2chat::pb::grpc::testing::SimpleRequest;
use prost::Message;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_resource_exhausted_and_memory_stays_bounded() {
    within(TEST_PATIENCE, "the whole of test gzip_bomb_is_resource_exhausted_and_memory_stays_bounded", async {
        let bomb = gzip_bomb();
        // The default `--max-message-bytes`, as the README gives it (not read from the code).
        let limit = 4 << 20;
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

        let server = ServerProcess::start(&["--interop"]).await;
        let mut client = WireClient::connect(server.addr).await;

        // A small gzip call first, so that what any first call allocates (the handler's paths,
        // the decompressor, h2's buffers) is not counted as the bomb's cost.
        let mut warm_up = client
            .start(
                "/grpc.testing.TestService/UnaryCall",
                &[("grpc-encoding", "gzip")],
            )
            .await;
        let small = SimpleRequest {
            response_size: 10,
            ..SimpleRequest::default()
        };
        warm_up.send(frame(true, &compress("gzip", &small.encode_to_vec())), true);
        assert_eq!(warm_up.finish().await.0.code(), Code::Ok);

        let before = server.rss_kib() as usize * 1024;
        server.reset_peak_rss();
        let mut call = client
            .start(
                "/grpc.testing.TestService/UnaryCall",
                &[("grpc-encoding", "gzip")],
            )
            .await;
        call.send(payload, true);
        let (status, _) = call.finish().await;
        let peak = server.peak_rss_kib() as usize * 1024;

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
        assert!(server.terminate().await.success(), "server exits 0 on SIGTERM");
    })
    .await;
}
