//! `--small-frame-budget-bytes` (16 MiB): h2 charges each received DATA frame under 256 bytes
//! (END_STREAM aside) 256 minus its length for as long as it waits in h2 untaken, and closes the
//! connection with GOAWAY(ENHANCE_YOUR_CALM, "too_many_data_frames") once the charges pass the
//! budget. A 1-byte frame costs 255 bytes, so 64 KiB holds 257 of them (16 MiB: 65,793).
//!
//! A call's task takes received frames out of h2 as they come, even while its handler is busy
//! (`Inner::poll_drain` in `grpc/server/call/mod.rs`), so frames pile up in h2 only while they
//! arrive faster than the tasks take them. The test makes that certain: a new call's HEADERS and
//! its 1-byte frames in one write of a few KiB, one TCP segment, which h2 reads to the end before
//! the server can accept the call. (The default's 65,793 frames are 658 KB: no one segment
//! holds them, and between two the server may take what came; `ops/limits_table.rs` checks the
//! default that `serve --help` shows against the README's table.) Frames written by hand: no
//! HTTP/2 library sends 258 1-byte DATA frames in a row.

use crate::support::frames::{code, data, grpc_request, RawConnection};
use crate::support::process::ServerProcess;
use crate::support::wire::{Bystander, ECHO_BIDI};
use crate::support::{within, PATIENCE, TEST_PATIENCE};

/// What one 1-byte DATA frame costs of the budget while it waits (h2's threshold, 256, minus 1).
const ONE_BYTE_FRAME_COST: usize = 255;

/// The HEADERS of a new echo call on `stream`, then `n` 1-byte DATA frames on it (zeros: the
/// start of empty messages), for one write.
fn new_call_then_one_byte_frames(stream: u32, n: usize) -> Vec<u8> {
    let mut out = grpc_request(stream, ECHO_BIDI, &[]);
    for _ in 0..n {
        out.extend_from_slice(&data(stream, &[0], false));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_data_frames_past_small_frame_budget_bytes_get_goaway_enhance_your_calm() {
    within(
        TEST_PATIENCE,
        "the whole of test small_data_frames_past_small_frame_budget_bytes_get_goaway_enhance_your_calm",
        async {
            let budget = 64 << 10;
            let budget_flag = budget.to_string();
            let server = ServerProcess::start(&["--small-frame-budget-bytes", &budget_flag]).await;
            let mut bystander = Bystander::start(server.addr).await;
            let mut conn = RawConnection::connect(server.addr, &[]).await;

            // As many as the budget holds: the connection stays.
            let fits = budget / ONE_BYTE_FRAME_COST;
            conn.send(&new_call_then_one_byte_frames(1, fits)).await;
            conn.ping_answered(1).await;

            // One more than that, on a new call.
            conn.send(&new_call_then_one_byte_frames(3, fits + 1)).await;
            let (goaway, _) = conn.goaway().await;
            assert_eq!(
                (goaway.code, goaway.debug.as_str()),
                (code::ENHANCE_YOUR_CALM, "too_many_data_frames"),
                "{} 1-byte frames in one write: {goaway:?}",
                fits + 1
            );
            within(
                PATIENCE,
                "the server to close the connection after its GOAWAY",
                conn.closed(),
            )
            .await;

            bystander.still_served().await;
        },
    )
    .await;
}
