//! A peer cannot drive the server's log: h2's complaints about peers are not at warn by default,
//! repeats are limited, and the WatchLogs ring keeps what it had.
//!
//! The attack (issue 12): 100,000 unsolicited PING ACKs (1.7 MB) made 14.4 MB of WARN lines at
//! the default filter and flushed everything else out of the WatchLogs ring.

use std::time::Duration;

use h2chat::grpc::{CallOptions, Channel};
use h2chat::pb::h2chat::logs::v1::{LogEntry, WatchLogsRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{well_behaved_check, within, Server, PATIENCE};

/// The client connection preface, an empty SETTINGS frame, then `n` PING frames with the ACK
/// flag set (RFC 9113 §6.7): 17 bytes each.
fn unsolicited_ping_acks(n: usize) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for i in 0..n {
        out.extend_from_slice(&[0, 0, 8, 6, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&(i as u64).to_be_bytes());
    }
    out
}

/// The first retained entry whose message contains `text`, asked for with WatchLogs.
async fn retained(server: &Server, text: &str) -> Option<LogEntry> {
    let ch = Channel::connect(server.addr).await.expect("connect");
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(2)),
        ..CallOptions::default()
    };
    let mut call = ch
        .start("/h2chat.logs.v1.LogWatcher/WatchLogs", opts)
        .await
        .expect("start WatchLogs");
    let req = WatchLogsRequest {
        filter: text.into(),
        limit: 1,
    };
    call.send_last(&req).await.expect("send");
    // Retained entries come first; if there is none, the deadline ends the call.
    call.recv::<LogEntry>().await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_ping_acks_neither_flood_the_log_nor_flush_the_ring() {
    let server = Server::start_default_log(&[]);
    assert!(
        retained(&server, "listening").await.is_some(),
        "the ring has the start"
    );
    let before = server.log_lines_with("").len();

    let flood = unsolicited_ping_acks(100_000);
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    within(
        PATIENCE,
        "sending 1.7 MB of PING ACKs",
        tcp.write_all(&flood),
    )
    .await
    .expect("write");
    // The server has read them all once a later frame is answered: a PING of our own.
    within(PATIENCE, "the flood to be read", async {
        tcp.write_all(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .expect("ping");
        tcp.flush().await.expect("flush");
        use tokio::io::AsyncReadExt;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The PING ACK echoes our payload 1..=8.
        while !seen.windows(8).any(|w| w == [1, 2, 3, 4, 5, 6, 7, 8]) {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            seen.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
    })
    .await;
    well_behaved_check(server.addr).await;
    let lines = server.log_lines_with("").len().saturating_sub(before);
    assert!(lines < 50, "the flood made {lines} log lines");
    assert!(
        retained(&server, "listening").await.is_some(),
        "the ring still holds the start"
    );
}
