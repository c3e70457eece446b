//! `h2chat chat` in a pseudo-terminal, read back through a terminal emulator (`vt100`): what the
//! screen shows, that typing survives incoming lines, and that every way out leaves cleanly.

use crate::support::{within, TEST_PATIENCE};
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::support::chat::{self, kind, reason, PATIENCE};
use crate::support::proxy::Proxy;
use crate::support::TestServer;
use h2chat::grpc::client::{Channel, ClientCall};
use h2chat::pb::chat::v1::{EventKind, LeaveReason};
use h2chat::services::app::AppConfig;
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

const ROWS: u16 = 30;
const COLS: u16 = 100;

fn nonzero(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).expect("a terminal size is not zero")
}

/// What the pty has shown so far.
struct Screen {
    parser: vt100::Parser,
    /// The pty has closed (the program exited).
    closed: bool,
}

/// `h2chat chat` running in a pseudo-terminal.
struct Tty {
    screen: Arc<(Mutex<Screen>, Condvar)>,
    keys: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    _master: Box<dyn MasterPty + Send>,
}

impl Tty {
    /// Starts `h2chat chat <args>` in a ROWS x COLS terminal.
    fn spawn(args: &[&str]) -> Tty {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_h2chat"));
        cmd.arg("chat");
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("RUST_LOG");
        let child = pty.slave.spawn_command(cmd).expect("spawn h2chat chat");
        drop(pty.slave);
        let mut output = pty.master.try_clone_reader().expect("pty reader");
        let keys = pty.master.take_writer().expect("pty writer");
        let screen = Arc::new((
            Mutex::new(Screen {
                parser: vt100::Parser::new(nonzero(ROWS), nonzero(COLS), 0),
                closed: false,
            }),
            Condvar::new(),
        ));
        let shared = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = output.read(&mut buf).unwrap_or(0);
                let (lock, changed) = &*shared;
                let mut screen = lock.lock().expect("screen lock");
                match buf.get(..n) {
                    Some(bytes) if n > 0 => screen.parser.process(bytes),
                    _ => screen.closed = true,
                }
                changed.notify_all();
                if screen.closed {
                    return;
                }
            }
        });
        Tty {
            screen,
            keys,
            child,
            _master: pty.master,
        }
    }

    /// Types `keys` (`\r` is Enter).
    fn type_keys(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).expect("type");
        self.keys.flush().expect("flush keys");
    }

    /// Waits until the screen satisfies `want` (at most [`PATIENCE`]); returns its text.
    fn wait_for(&self, what: &str, want: impl Fn(&vt100::Screen) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let (lock, changed) = &*self.screen;
        let mut screen = lock.lock().expect("screen lock");
        loop {
            if want(screen.parser.screen()) {
                return screen.parser.screen().contents();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if screen.closed || left.is_zero() {
                panic!(
                    "screen never showed {what}:\n{}",
                    screen.parser.screen().contents()
                );
            }
            screen = changed.wait_timeout(screen, left).expect("screen lock").0;
        }
    }

    /// Waits until the screen shows `text`.
    fn wait_text(&self, text: &str) -> String {
        self.wait_for(text, |s| s.contents().contains(text))
    }

    /// Waits for the program to exit (at most [`PATIENCE`]); returns its exit code.
    fn exit_code(self) -> u32 {
        let mut child = self.child;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(status) => status.expect("wait for h2chat chat").exit_code(),
            Err(_) => panic!("h2chat chat did not exit within {PATIENCE:?}"),
        }
    }
}

/// The row the cursor is on, without trailing blanks.
fn cursor_row(screen: &vt100::Screen) -> String {
    let (row, _) = screen.cursor_position();
    let text = screen
        .rows(0, COLS)
        .nth(usize::from(row))
        .unwrap_or_default();
    text.trim_end().to_string()
}

/// The row above the cursor's.
fn row_above_cursor(screen: &vt100::Screen) -> String {
    let (row, _) = screen.cursor_position();
    let above = usize::from(row)
        .checked_sub(1)
        .expect("a row above the prompt");
    let text = screen.rows(0, COLS).nth(above).unwrap_or_default();
    text.trim_end().to_string()
}

/// A member joined directly with the library client, to talk to the terminal.
async fn member(server: &TestServer, room: &str, name: &str) -> ClientCall {
    let ch = Channel::connect(server.addr).await.expect("connect");
    chat::join(&ch, room, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_shows_history_then_live_lines_and_the_own_line_once() {
    within(
        TEST_PATIENCE,
        "the whole of test the_screen_shows_history_then_live_lines_and_the_own_line_once",
        async {
            let server = TestServer::default().await;
            let mut dave = member(&server, "tty", "dave").await;
            dave.send(&chat::post("hello carol")).await.expect("post");
            chat::until_text(&mut dave, "hello carol").await;

            let mut carol = Tty::spawn(&[
                "--addr",
                &server.target(),
                "--room",
                "tty",
                "--name",
                "carol",
            ]);
            carol.wait_for("the prompt after the history", |s| {
                let text = s.contents();
                text.contains("] dave: hello carol")
                    && text.contains("* carol joined")
                    && cursor_row(s) == ">"
            });

            carol.type_keys("hi dave\r");
            let screen = carol.wait_text("] carol: hi dave");
            assert_eq!(screen.matches("hi dave").count(), 1, "{screen}");
            carol.wait_for("an empty prompt", |s| cursor_row(s) == ">");
            let got = chat::until_text(&mut dave, "hi dave").await;
            assert_eq!(got.sender_id, "carol");

            dave.send(&chat::post("how are you")).await.expect("post");
            carol.wait_text("] dave: how are you");
            carol.type_keys("/quit\r");
            assert_eq!(carol.exit_code(), 0);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_lines_print_above_a_half_typed_line() {
    within(
        TEST_PATIENCE,
        "the whole of test incoming_lines_print_above_a_half_typed_line",
        async {
            let server = TestServer::default().await;
            let mut dave = member(&server, "typing", "dave").await;
            let mut carol = Tty::spawn(&[
                "--addr",
                &server.target(),
                "--room",
                "typing",
                "--name",
                "carol",
            ]);
            carol.wait_for("the prompt", |s| {
                s.contents().contains("* carol joined") && cursor_row(s) == ">"
            });
            carol.type_keys("half typed");
            carol.wait_for("the typed text", |s| cursor_row(s) == "> half typed");

            for i in 1..=3 {
                let text = format!("interruption {i}");
                dave.send(&chat::post(&text)).await.expect("post");
                carol.wait_for(&text, |s| {
                    row_above_cursor(s).ends_with(&format!("] dave: {text}"))
                        && cursor_row(s) == "> half typed"
                });
            }
            carol.type_keys(" and done\r");
            carol.wait_text("] carol: half typed and done");
            let got = chat::until_text(&mut dave, "half typed and done").await;
            assert_eq!(got.sender_id, "carol");
            carol.type_keys("exit\r");
            assert_eq!(carol.exit_code(), 0);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_lists_the_members_in_join_order() {
    within(
        TEST_PATIENCE,
        "the whole of test who_lists_the_members_in_join_order",
        async {
            let server = TestServer::default().await;
            let _dave = member(&server, "who", "dave").await;
            let mut carol = Tty::spawn(&[
                "--addr",
                &server.target(),
                "--room",
                "who",
                "--name",
                "carol",
            ]);
            carol.wait_text("* carol joined");
            carol.type_keys("/who\r");
            carol.wait_text("members (2): dave, carol");
            carol.type_keys("\x04");
            assert_eq!(carol.exit_code(), 0);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_exit_ctrl_d_and_ctrl_c_leave_cleanly() {
    within(
        TEST_PATIENCE,
        "the whole of test quit_exit_ctrl_d_and_ctrl_c_leave_cleanly",
        async {
            let server = TestServer::default().await;
            let mut dave = member(&server, "leaving", "dave").await;
            for keys in ["/quit\r", "exit\r", "\x04", "\x03"] {
                let mut carol = Tty::spawn(&[
                    "--addr",
                    &server.target(),
                    "--room",
                    "leaving",
                    "--name",
                    "carol",
                ]);
                carol.wait_for("the prompt", |s| {
                    s.contents().contains("* carol joined") && cursor_row(s) == ">"
                });
                carol.type_keys(keys);
                assert_eq!(carol.exit_code(), 0, "leaving with {keys:?}");
                let left = chat::next_where(&mut dave, |m| kind(m) == EventKind::Left).await;
                assert_eq!(
                    (left.sender_id.as_str(), reason(&left)),
                    ("carol", LeaveReason::Left),
                    "leaving with {keys:?}"
                );
            }
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_name_it_asks_for_one() {
    within(
        TEST_PATIENCE,
        "the whole of test without_a_name_it_asks_for_one",
        async {
            let server = TestServer::default().await;
            let mut erin = Tty::spawn(&["--addr", &server.target(), "--room", "ask"]);
            erin.wait_text("Your name:");
            erin.type_keys("erin\r");
            erin.wait_text("* erin joined");
            erin.type_keys("/quit\r");
            assert_eq!(erin.exit_code(), 0);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_says_reconnecting_then_reconnected_and_misses_nothing() {
    within(
        TEST_PATIENCE,
        "the whole of test a_lost_connection_says_reconnecting_then_reconnected_and_misses_nothing",
        async {
            let server = TestServer::default().await;
            let proxy = Proxy::start(server.addr).await;
            let mut dave = member(&server, "flaky", "dave").await;
            let addr = proxy.addr.to_string();
            let mut carol = Tty::spawn(&["--addr", &addr, "--room", "flaky", "--name", "carol"]);
            carol.wait_text("* carol joined");
            proxy.cut().await;
            // Posted while carol is away: she sees it once she is back.
            dave.send(&chat::post("while you were out"))
                .await
                .expect("post");
            carol.wait_text("reconnecting…");
            let screen = carol.wait_for("the missed line after reconnecting", |s| {
                let text = s.contents();
                text.contains("! reconnected") && text.contains("] dave: while you were out")
            });
            assert_eq!(screen.matches("while you were out").count(), 1, "{screen}");
            carol.type_keys("/quit\r");
            assert_eq!(carol.exit_code(), 0);
            server.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_servers_limit_is_refused_locally_and_the_session_goes_on() {
    within(
        TEST_PATIENCE,
        "the whole of test a_line_over_the_servers_limit_is_refused_locally_and_the_session_goes_on",
        async {
            let mut config = AppConfig::default();
            config.chat.max_text_bytes = 8;
            let server = TestServer::start(config).await;
            let mut carol = Tty::spawn(&[
                "--addr",
                &server.target(),
                "--room",
                "short",
                "--name",
                "carol",
            ]);
            carol.wait_for("the prompt", |s| {
                s.contents().contains("* carol joined") && cursor_row(s) == ">"
            });
            // The limit is the server's (`chat-max-text-bytes`), not the client's default.
            carol.type_keys("far too long for this server\r");
            carol.wait_text("! not sent: 28 bytes is over the server's limit of 8 bytes");
            carol.type_keys("fits\r");
            carol.wait_text("carol: fits");
            carol.type_keys("/quit\r");
            assert_eq!(carol.exit_code(), 0);
            server.shutdown().await;
        },
    )
    .await;
}
