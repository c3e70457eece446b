//! `h2chat chat` never hands hostile text to the terminal as it came: control, bidi and
//! zero-width characters are escaped visibly, a multi-line text's later lines are marked, padding
//! shows; in JSON, C1 and bidi characters are `\uXXXX`.

use crate::support::chat;
use crate::support::cli::ChatProcess;
use crate::support::TestServer;
use h2chat::grpc::client::Channel;

/// What mallory posts: each text tries something on whoever reads it.
const HOSTILE: &[&str] = &[
    "\u{202E}drowssap ruoy em dnes",
    "\u{9B}2J\u{1b}[31mred",
    "ok\n[14:40:12] alice: send me your password",
    "ali\u{200B}ce\u{FEFF}",
    "hi                                                            [14:40:12] alice: pay me",
    "line\u{2028}separator",
];

/// Whether `c` must never reach a terminal raw.
fn dangerous(c: char) -> bool {
    c.is_control() || h2chat::protocol::hidden_char(c).is_some()
}

/// Runs a scripted reader with `extra` flags while mallory posts every hostile text; returns the
/// reader's standard output.
async fn read_hostile(extra: &[&str]) -> Vec<String> {
    let server = TestServer::default().await;
    let mut reader = ChatProcess::start(&server.target(), "hostile", Some("reader"), extra);
    reader.expect_out(|l| l.contains("reader")).await;
    let ch = Channel::connect(server.addr).await.expect("connect");
    let mut mallory = chat::join(&ch, "hostile", "mallory").await;
    for text in HOSTILE {
        mallory.send(&chat::post(text)).await.expect("post");
    }
    mallory.send(&chat::post("the end")).await.expect("post");
    reader.expect_out(|l| l.contains("the end")).await;
    reader.close_stdin();
    let done = reader.finish().await;
    assert_eq!(done.code, Some(0), "{done:#?}");
    server.shutdown().await;
    done.out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_escapes_hostile_characters_and_marks_continuations() {
    let out = read_hostile(&[]).await;
    for line in &out {
        assert!(!line.chars().any(dangerous), "raw in {line:?}");
    }
    let all = out.join("\n");
    assert!(all.contains("mallory: \\u{202E}drowssap"), "{all}");
    assert!(
        all.contains("mallory: \\u{009B}2J\\u{001B}[31mred"),
        "{all}"
    );
    assert!(all.contains("mallory: ali\\u{200B}ce\\u{FEFF}"), "{all}");
    assert!(all.contains("line\\u{2028}separator"), "{all}");
    // The forged line is a marked continuation of mallory's message, not a line of alice's.
    let forged = out
        .iter()
        .position(|l| l.ends_with("mallory: ok"))
        .expect("mallory's first line");
    assert_eq!(
        out[forged + 1],
        "  | [14:40:12] alice: send me your password"
    );
    assert!(
        out.iter().all(|l| !l.starts_with("[14:40:12] alice")),
        "{out:#?}"
    );
    // The padding shows instead of pushing the rest onto a line of its own.
    assert!(all.contains("mallory: hi ␣␣␣"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_escapes_c1_and_bidi_characters() {
    let out = read_hostile(&["--format", "json"]).await;
    let mut texts = Vec::new();
    for line in &out {
        assert!(!line.chars().any(dangerous), "raw in {line:?}");
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        if v["kind"] == "message" {
            texts.push(v["text"].as_str().unwrap_or_default().to_string());
        }
    }
    let all = out.join("\n");
    assert!(all.contains(r"\u202edrowssap"), "{all}");
    assert!(all.contains(r"\u009b2J"), "{all}");
    assert!(all.contains(r"\u2028"), "{all}");
    // Parsed back, the texts are exactly what mallory posted.
    let mut expected: Vec<String> = HOSTILE.iter().map(|t| t.to_string()).collect();
    expected.push("the end".into());
    assert_eq!(texts, expected);
}
