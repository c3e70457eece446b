//! Identities that cannot be forged, over real sockets: with "alice" in the room, every look-alike
//! of her name is refused, as ALREADY_EXISTS (a reader could not tell it from hers) or as
//! INVALID_ARGUMENT (it hides characters), with a message that says why.

use crate::support::chat::{self, kind};
use crate::support::TestServer;
use h2chat::grpc::client::Channel;
use h2chat::grpc::Code;
use h2chat::pb::chat::v1::EventKind;

/// The status a join of `name` into `room` ends with.
async fn join_status(ch: &Channel, room: &str, name: &str) -> h2chat::grpc::Status {
    let mut call = chat::start(
        ch,
        &chat::msg(room, name, "I am alice, send me your password"),
    )
    .await;
    chat::final_status(&mut call).await
}

#[tokio::test]
async fn every_look_alike_of_a_present_members_name_is_refused() {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut alice = chat::join(&ch, "room", "alice").await;
    let cases: &[(&str, &str, Code, &str)] = &[
        ("case", "Alice", Code::AlreadyExists, "looks like \"alice\""),
        (
            "Cyrillic а",
            "\u{0430}lice",
            Code::AlreadyExists,
            "looks like",
        ),
        (
            "fullwidth",
            "\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}",
            Code::AlreadyExists,
            "looks like",
        ),
        (
            "zero-width space",
            "ali\u{200B}ce",
            Code::InvalidArgument,
            "zero-width",
        ),
        (
            "trailing space",
            "alice ",
            Code::InvalidArgument,
            "end with whitespace",
        ),
        (
            "bidi override",
            "\u{202E}ecila",
            Code::InvalidArgument,
            "bidirectional",
        ),
        (
            "soft hyphen",
            "ali\u{00AD}ce",
            Code::InvalidArgument,
            "U+00AD",
        ),
        (
            "byte order mark",
            "\u{FEFF}alice",
            Code::InvalidArgument,
            "U+FEFF",
        ),
        (
            "line separator",
            "alice\u{2028}",
            Code::InvalidArgument,
            "line or paragraph",
        ),
        (
            "whitespace only",
            "   ",
            Code::InvalidArgument,
            "only whitespace",
        ),
    ];
    for (what, name, code, says) in cases {
        let status = join_status(&ch, "room", name).await;
        assert_eq!(status.code(), *code, "{what}: {status:?}");
        assert!(
            status.message().contains(says),
            "{what}: {}",
            status.message()
        );
    }
    // None of them got in or posted: every event alice sees is her own.
    alice
        .send(&chat::post("still just me"))
        .await
        .expect("post");
    let mut seen = Vec::new();
    loop {
        let m = chat::next(&mut alice).await;
        let done = m.text == "still just me";
        seen.push(m);
        if done {
            break;
        }
    }
    assert!(seen.iter().all(|m| m.sender_id == "alice"), "{seen:#?}");
    assert_eq!(kind(&seen[0]), EventKind::Joined);
    server.shutdown().await;
}

#[tokio::test]
async fn nfd_and_nfc_forms_are_one_name_written_in_nfc() {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let nfd = "e\u{0301}mile";
    let nfc = "\u{00E9}mile";
    let mut emile = chat::join(&ch, "caf\u{0065}\u{0301}", nfd).await;
    let joined = chat::next(&mut emile).await;
    assert_eq!(joined.sender_id, nfc, "the joined identity is the NFC form");
    assert_eq!(joined.room_id, "caf\u{00E9}");
    // The NFC form is the same name, in the same room (named in either form).
    let status = join_status(&ch, "caf\u{00E9}", nfc).await;
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn whitespace_only_or_padded_rooms_are_refused() {
    let server = TestServer::default().await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    for room in ["   ", " lobby", "lobby ", "lob  by", "lob\u{200D}by"] {
        let status = join_status(&ch, room, "zoe").await;
        assert_eq!(status.code(), Code::InvalidArgument, "{room:?}: {status:?}");
        assert!(
            status.message().starts_with("room_id"),
            "{}",
            status.message()
        );
    }
    server.shutdown().await;
}
