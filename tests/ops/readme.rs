//! The README's quick start, run as written: every command of its `sh` blocks in "The two
//! commands", "Chatting with grpcurl", "The terminal client" and "Other services" — the server,
//! alice's and bob's grpcurl sessions, list, describe, Members, health, the unary call and the
//! client in scripted mode — against the real binary, with each output checked.
//!
//! The commands are read from README.md, not copied here: change one there and this test runs
//! the new text (a command it does not know fails it). Two substitutions only: the server listens
//! on a free port instead of 50051 (so `localhost:50051` becomes `localhost:PORT`, and the client
//! gets `--addr`), and `cargo run --release --` / `target/release/h2chat` are the binary cargo
//! built for this test. `bash tests/run-all.sh` and `cargo test` (this very suite), the tool
//! setup (`tests/ops/setup.rs` runs it) and `cargo install --path .` are not run here.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::server::LoggedServer;
use crate::support::cli::signal;
use crate::support::require_tool;
use crate::support::PATIENCE;

/// The sections whose commands make the quick start.
const SECTIONS: [&str; 4] = [
    "## The two commands",
    "## Chatting with grpcurl",
    "## The terminal client",
    "## Other services",
];

/// The README's port, replaced by the test server's.
const README_TARGET: &str = "localhost:50051";

/// One shell command of the README: its words, and the text as written.
#[derive(Clone, Debug)]
struct ShellCommand {
    text: String,
    words: Vec<String>,
}

/// The commands of every ```sh block in `section` (up to the next `## ` heading).
fn commands_in(readme: &str, section: &str) -> Vec<ShellCommand> {
    let start = readme
        .find(&format!("{section}\n"))
        .unwrap_or_else(|| panic!("README has no section {section:?}"));
    let body = &readme[start + section.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut commands = Vec::new();
    for block in body.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        let joined = block.replace("\\\n", " ");
        for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words = shell_words(line);
            if !words.is_empty() {
                commands.push(ShellCommand {
                    text: line.to_owned(),
                    words,
                });
            }
        }
    }
    commands
}

/// Splits a line as sh would for the README's simple commands: single and double quotes, a `#`
/// that starts a word begins a comment, `|` is a word of its own.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '"'));
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// A running command whose stdout the test reads as it comes. Killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Everything read so far.
    out: Vec<String>,
    what: String,
}

impl Running {
    fn spawn(cmd: Command, what: &str) -> Running {
        let mut child = spawn_piped(cmd, what);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            out: Vec::new(),
            what: what.to_owned(),
        }
    }

    /// The next JSON object grpcurl prints (indented, one `}` at the start of its last line).
    async fn next_object(&mut self) -> Value {
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!("{} ended; it printed:\n{}", self.what, self.out.join("\n")),
                Err(_) => panic!(
                    "{} printed no whole object within {PATIENCE:?}:\n{}",
                    self.what,
                    self.out.join("\n")
                ),
            };
            self.out.push(line.clone());
            text.push_str(&line);
            text.push('\n');
            if line == "}" {
                return serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} printed no JSON ({e}):\n{text}", self.what));
            }
        }
    }

    /// Objects until one satisfies `want`; returns it.
    async fn object_where(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next_object().await;
            if want(&v) {
                return v;
            }
        }
    }

    /// Ctrl-C, as the README says to end a session, and the exit.
    async fn interrupt(mut self) {
        signal(self.child.id().expect("running"), libc::SIGINT);
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not end on SIGINT", self.what))
            .expect("wait");
    }
}

/// Whether `v` is a chat event from `sender` with `text` (`""`: of `kind`).
fn event(v: &Value, sender: &str, text: &str, kind: Option<&str>) -> bool {
    v["senderId"] == sender
        && v.get("text").and_then(Value::as_str).unwrap_or("") == text
        && kind.is_none_or(|k| v["kind"] == k)
}

/// What a command printed, run to its end.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Starts `cmd` with its stdin, stdout and stderr piped; killed when dropped.
fn spawn_piped(mut cmd: Command, what: &str) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

async fn run_to_end(cmd: Command, input: &[u8], what: &str) -> Output {
    let mut child = spawn_piped(cmd, what);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write stdin");
    drop(stdin);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {PATIENCE:?}"))
        .expect("wait");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run_to_end`], failing the test unless the command exits 0.
async fn run_ok(cmd: Command, input: &[u8], what: &str) -> Output {
    let out = run_to_end(cmd, input, what).await;
    assert_eq!(out.code, Some(0), "{what}:\n{}{}", out.stdout, out.stderr);
    out
}

/// The quick start's commands, by what they are.
struct QuickStart {
    serve: ShellCommand,
    alice: ShellCommand,
    bob: ShellCommand,
    /// `grpcurl … list`, `describe …`, Members, Health/Check, UnaryCall: run to their end.
    unary: Vec<ShellCommand>,
    /// `Health/Watch`: a stream, ended with Ctrl-C.
    watch: ShellCommand,
    /// `h2chat chat`: the interactive line (run scripted: its stdin is a pipe) and the piped one.
    clients: Vec<ShellCommand>,
}

fn sort(commands: Vec<ShellCommand>) -> QuickStart {
    let mut serve = None;
    let mut alice = None;
    let mut bob = None;
    let mut watch = None;
    let mut unary = Vec::new();
    let mut clients = Vec::new();
    for c in commands {
        let w: Vec<&str> = c.words.iter().map(String::as_str).collect();
        match w.as_slice() {
            // The test command (this suite), its setup (run by tests/ops/setup.rs) and installing.
            ["bash", "tests/run-all.sh"]
            | ["bash", "tests/setup-tools.sh", ..]
            | ["cargo", "test", ..]
            | ["cargo", "install", "--path", "."] => {}
            ["cargo", "run", "--release", "--", "serve", ..] => serve = Some(c),
            ["cargo", "run", "--release", "--", "chat", ..] => clients.push(c),
            ["printf", _, "|", "target/release/h2chat", "chat", ..] => clients.push(c),
            ["grpcurl", .., "chat.v1.ChatService/Chat"] if c.text.contains("\"alice\"") => {
                alice = Some(c)
            }
            ["grpcurl", .., "chat.v1.ChatService/Chat"] if c.text.contains("\"bob\"") => {
                bob = Some(c)
            }
            ["grpcurl", .., "grpc.health.v1.Health/Watch"] => watch = Some(c),
            ["grpcurl", ..] => unary.push(c),
            _ => panic!(
                "the README's quick start has a command this test does not know: {}",
                c.text
            ),
        }
    }
    assert!(
        unary.len() >= 6,
        "list, describe, Members, list, Check, UnaryCall: {unary:?}"
    );
    QuickStart {
        serve: serve.expect("the README starts the server"),
        alice: alice.expect("alice's grpcurl session"),
        bob: bob.expect("bob's grpcurl session"),
        unary,
        watch: watch.expect("the Health/Watch example"),
        clients,
    }
}

/// A grpcurl command aimed at `target` instead of the README's port.
fn grpcurl(c: &ShellCommand, target: &str) -> Command {
    let mut cmd = Command::new(require_tool("grpcurl"));
    for w in &c.words[1..] {
        cmd.arg(if w == README_TARGET {
            target
        } else {
            w.as_str()
        });
    }
    cmd
}

/// An `h2chat` command (after `cargo run --release --` or `target/release/h2chat`) talking to
/// `target`; returns it and the stdin the README pipes into it.
fn h2chat_client(c: &ShellCommand, target: &str, typed: &str) -> (Command, Vec<u8>) {
    let w = &c.words;
    let (input, args) = if w[0] == "printf" {
        (w[1].replace("\\n", "\n"), &w[4..])
    } else {
        // The interactive line, run with a pipe for stdin: scripted, it posts what is "typed".
        (typed.to_owned(), &w[4..])
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h2chat"));
    cmd.args(args)
        .args(["--addr", target])
        .env_remove("RUST_LOG");
    (cmd, input.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quick_start_command_of_the_readme_works_as_described() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let commands: Vec<ShellCommand> = SECTIONS
        .iter()
        .flat_map(|s| commands_in(&readme, s))
        .collect();
    let qs = sort(commands);

    // The server: the README's arguments, on a free port.
    let serve_args: Vec<&str> = qs.serve.words[4..]
        .iter()
        .skip(1)
        .map(String::as_str)
        .collect();
    let server = LoggedServer::start(&serve_args, &[]).await;
    let target = format!("localhost:{}", server.addr.port());

    // Alice's session: her own join and "hello".
    let mut alice = Running::spawn(grpcurl(&qs.alice, &target), "alice's grpcurl");
    alice
        .object_where(|v| event(v, "alice", "", Some("EVENT_KIND_JOINED")))
        .await;
    let hello = alice
        .object_where(|v| event(v, "alice", "hello", None))
        .await;
    assert!(
        hello["seq"].is_string() && hello["roomId"] == "rust",
        "{hello}"
    );

    // Bob's: the room's history (alice's "hello") first, then his own join and "hi alice".
    let mut bob = Running::spawn(grpcurl(&qs.bob, &target), "bob's grpcurl");
    let first = bob.next_object().await;
    assert!(
        event(&first, "alice", "", Some("EVENT_KIND_JOINED")),
        "{first}"
    );
    bob.object_where(|v| event(v, "alice", "hello", None)).await;
    bob.object_where(|v| event(v, "bob", "hi alice", None))
        .await;
    // Alice sees bob arrive and speak.
    alice
        .object_where(|v| event(v, "bob", "", Some("EVENT_KIND_JOINED")))
        .await;
    alice
        .object_where(|v| event(v, "bob", "hi alice", None))
        .await;

    // list, describe, Members (alice and bob are in "rust"), Health/Check, UnaryCall.
    for c in &qs.unary {
        let out = run_ok(grpcurl(c, &target), b"", &c.text).await;
        let last = c.words.last().map(String::as_str).unwrap_or_default();
        let want: &[&str] = match last {
            "list" => &[
                "chat.v1.ChatService",
                "grpc.health.v1.Health",
                "grpc.testing.TestService",
            ],
            "chat.v1.ChatMessage" => &["chat.v1.ChatMessage is a message", "string room_id"],
            "chat.v1.ChatService/Members" => &["\"alice\"", "\"bob\""],
            "grpc.health.v1.Health/Check" => &["\"status\": \"SERVING\""],
            "grpc.testing.TestService/UnaryCall" => {
                &["\"payload\"", "\"body\": \"AAAAAAAAAAAAAA==\""]
            }
            other => panic!("no expected output for {other}: {}", c.text),
        };
        for w in want {
            assert!(
                out.stdout.contains(w),
                "{} printed no {w}:\n{}",
                c.text,
                out.stdout
            );
        }
    }

    // Health/Watch: SERVING at once, then it waits for changes until Ctrl-C.
    let mut watch = Running::spawn(grpcurl(&qs.watch, &target), "Health/Watch");
    let status = watch.next_object().await;
    assert_eq!(status["status"], "SERVING", "{status}");
    watch.interrupt().await;

    // Ctrl-C in bob's terminal: alice sees him leave.
    bob.interrupt().await;
    alice
        .object_where(|v| event(v, "bob", "", Some("EVENT_KIND_LEFT")))
        .await;
    alice.interrupt().await;

    // The terminal client, scripted: every line is posted and comes back; it exits 0.
    assert!(qs.clients.len() >= 2, "the README shows two client lines");
    for c in &qs.clients {
        let (cmd, input) = h2chat_client(c, &target, "typed in a pipe\n");
        let out = run_ok(cmd, &input, &c.text).await;
        let typed = String::from_utf8_lossy(&input).into_owned();
        for line in typed.lines() {
            assert!(
                out.stdout.contains(line),
                "{} did not show {line:?}:\n{}",
                c.text,
                out.stdout
            );
        }
        if c.words.iter().any(|w| w == "json") {
            for line in out.stdout.lines() {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", c.text));
            }
        }
    }
}

/// The README's "Watching the server's log, and an echo": a server following a file, WatchLogs
/// with `limit` (answers at once) and with an ERROR filter (the file's error, then it follows),
/// and BiDiChat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_watching_and_echo_examples_work_as_described() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let commands = commands_in(&readme, "## Watching the server's log, and an echo");
    let file = crate::support::TempFile::with_lines("readme-watch.log", &["ERROR disk full"]);
    let file_path = file.0.to_string_lossy().into_owned();
    let mut server = None;
    let mut ran = 0;
    for c in &commands {
        let w: Vec<&str> = c.words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["h2chat", "serve", "--watch-file", _] => {
                let s = LoggedServer::start(&["--watch-file", &file_path], &[]).await;
                server = Some(s);
            }
            ["grpcurl", ..] => {
                let s = server.as_ref().expect("the server is started first");
                let target = format!("localhost:{}", s.addr.port());
                let method = w.last().copied().unwrap_or_default();
                let body = &c.words[3];
                match (method, body.as_str()) {
                    ("h2chat.logs.v1.LogWatcher/WatchLogs", b) if b.contains("\"limit\"") => {
                        let out = run_ok(grpcurl(c, &target), b"", &c.text).await;
                        let entry: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
                            panic!("{}: one entry, not {e}: {}", c.text, out.stdout)
                        });
                        assert!(entry["msg"].is_string(), "{entry}");
                    }
                    ("h2chat.logs.v1.LogWatcher/WatchLogs", _) => {
                        let mut follow = Running::spawn(grpcurl(c, &target), &c.text);
                        let entry = follow.next_object().await;
                        assert_eq!(entry["level"], "ERROR", "{entry}");
                        assert!(
                            entry["msg"]
                                .as_str()
                                .is_some_and(|m| m.contains("disk full")),
                            "{entry}"
                        );
                        follow.interrupt().await;
                    }
                    ("h2chat.echo.v1.Chat/BiDiChat", _) => {
                        let out = run_ok(grpcurl(c, &target), b"", &c.text).await;
                        for echo in ["echo: hi", "echo: again"] {
                            assert!(
                                out.stdout.contains(echo),
                                "{}: no {echo}: {}",
                                c.text,
                                out.stdout
                            );
                        }
                    }
                    _ => panic!("a log-watching example this test does not know: {}", c.text),
                }
            }
            _ => panic!("a log-watching example this test does not know: {}", c.text),
        }
        ran += 1;
    }
    assert_eq!(ran, 4, "the server, two WatchLogs calls and BiDiChat");
}

/// The reconnect notices the README quotes are the ones the client prints.
#[test]
fn the_readme_quotes_the_reconnect_notices_the_client_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let render =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/client/render.rs"))
            .expect("read render.rs");
    for part in [
        "! connection lost (",
        "); reconnecting… (in ",
        "! still reconnecting… (",
        "; next try in ",
        "! reconnected",
    ] {
        assert!(readme.contains(part), "the README does not quote {part:?}");
        assert!(render.contains(part), "the client does not print {part:?}");
    }
}

#[test]
fn shell_words_reads_quotes_comments_and_pipes() {
    assert_eq!(
        shell_words(r#"grpcurl -d '{"a":1}' x  # note"#),
        ["grpcurl", "-d", r#"{"a":1}"#, "x"]
    );
    assert_eq!(
        shell_words(r"printf 'a\nb\n' | h2chat chat"),
        ["printf", r"a\nb\n", "|", "h2chat", "chat"]
    );
}
