//! What a client sends and the server has not consumed: a length prefix reserves nothing, and a
//! call whose handler is not reading holds at most its stream window, never the connection's.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2chat::pb::chat::v1::ChatMessage;
use h2chat::pb::grpc::health::v1::HealthCheckRequest;

use crate::harness::{message, mib, well_behaved_check, within, Attacker, Server, PATIENCE};

/// The address space the prefix test gives the server: 1 GiB (as `ulimit -v 1048576`).
const ADDRESS_SPACE: u64 = 1 << 30;

/// A 5-byte prefix announcing a 4 MiB message that never comes.
fn prefix_of_4_mib() -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(0);
    b.put_u32(4 << 20);
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_announcing_4_mib_leave_the_server_alive_in_1_gib_of_address_space() {
    let mut server = Server::start_with_address_space(ADDRESS_SPACE, &[]);
    well_behaved_check(server.addr).await;
    let base = server.rss();
    server.reset_peak();

    // 512 streams on four connections, each sending only a prefix (before the fix a 4 MiB
    // reservation per stream: 2 GiB).
    let mut attackers = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut attacker = Attacker::connect(server.addr, 65_535).await;
        for _ in 0..128 {
            let (response, tx) = attacker
                .call(
                    "/h2chat.echo.v1.Chat/BiDiChat",
                    &[],
                    prefix_of_4_mib(),
                    false,
                )
                .await;
            held.push((response, tx));
        }
        attackers.push(attacker);
    }
    // The echo handler answers only whole messages: to know the server has taken every prefix,
    // ask for something else on each attacking connection, after its streams.
    for attacker in &mut attackers {
        let (check, _tx) = attacker
            .call(
                "/grpc.health.v1.Health/Check",
                &[],
                message(&HealthCheckRequest::default()),
                true,
            )
            .await;
        let resp = within(PATIENCE, "a check behind 128 prefixes", check)
            .await
            .expect("the check is answered");
        assert_eq!(resp.status(), 200);
    }
    well_behaved_check(server.addr).await;
    let peak = server.settled_peak().await;
    assert!(server.is_alive(), "the server survives");
    let grown = peak.saturating_sub(base);
    eprintln!("512 prefixes: grown {:.1} MiB", mib(grown));
    assert!(
        grown <= 16 << 20,
        "512 five-byte prefixes grew the server by {:.1} MiB",
        mib(grown)
    );
    drop(held);
}

/// A chat post of `text_bytes` bytes.
fn post(room: &str, name: &str, text_bytes: usize) -> Bytes {
    message(&ChatMessage {
        room_id: room.into(),
        sender_id: name.into(),
        text: "x".repeat(text_bytes),
        ..ChatMessage::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_the_server_stops_reading_hold_their_stream_window_not_the_connections() {
    // One post per 100 s: after its first post, a member's stream is not read.
    let server = Server::start(&["--max-post-rate", "0.01", "--post-burst", "1"]);
    well_behaved_check(server.addr).await;
    let base = server.rss();
    server.reset_peak();

    let mut attacker = Attacker::connect(server.addr, 65_535).await;
    let mut members = Vec::new();
    // Each member sends 2 MiB of 4 KiB posts; h2 (in this process) holds what the server's
    // window does not let through.
    let mut flood = BytesMut::new();
    for _ in 0..512 {
        flood.extend_from_slice(&post("", "", 4000));
    }
    let flood = flood.freeze();
    for i in 0..16 {
        let name = format!("m{i}");
        let (response, mut tx) = attacker
            .call(
                "/chat.v1.ChatService/Chat",
                &[],
                post("flood", &name, 10),
                false,
            )
            .await;
        tx.send_data(flood.clone(), false).expect("queue the flood");
        members.push((response, tx));
    }
    // 16 members' unread posts do not close the connection's window: a check on the same
    // connection gets through.
    let (check, _tx) = attacker
        .call(
            "/grpc.health.v1.Health/Check",
            &[],
            message(&HealthCheckRequest::default()),
            true,
        )
        .await;
    let resp = within(
        Duration::from_secs(20),
        "a check beside 16 unread floods",
        check,
    )
    .await
    .expect("the check is answered");
    assert_eq!(resp.status(), 200);
    well_behaved_check(server.addr).await;
    let peak = server.settled_peak().await;
    let grown = peak.saturating_sub(base);
    eprintln!("16 unread floods: grown {:.1} MiB", mib(grown));
    // Each holds at most its 64 KiB window (and the decoder a quarter more): about 1.3 MiB,
    // plus the members themselves.
    assert!(
        grown <= 4 << 20,
        "16 members' unread posts grew the server by {:.1} MiB",
        mib(grown)
    );
    drop(members);
}
