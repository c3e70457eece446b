//! `h2chat chat`: the chat client in a terminal, or driven by a script.
//!
//! [`run`] picks the mode: interactive when stdin and stdout are both terminals the line editor
//! can drive, else scripted ([`script`](crate::client::scripted)). Both run a [`Session`], which reconnects and resumes by itself.
//!
//! Interactive mode edits the input line with `rustyline`. Incoming lines are printed through its
//! external printer, which clears the prompt line, prints, and redraws the prompt with what was
//! being typed, so typing is never garbled. Enter does not end `readline`: a key binding hands the
//! line over and clears the input, so the line only appears once, when the server's echo of it
//! arrives. `/quit`, `exit`, Ctrl-D on an empty line and Ctrl-C leave: the call is cancelled and
//! the room records the leave with reason `LEFT`.
//!
//! # Exit codes
//! | code | meaning |
//! |---|---|
//! | 0 | left normally: `/quit`, `exit`, Ctrl-D, Ctrl-C; scripted: end of input, every post echoed |
//! | 1 | a local failure: the terminal, standard output, or a session that failed unexpectedly |
//! | 2 | bad command line (from `clap`), or no name given in scripted mode |
//! | 3 | the server cannot be reached (`cannot connect to 127.0.0.1:50051: connection refused`) |
//! | 4 | the name is taken in that room (ALREADY_EXISTS) |
//! | 5 | the room, name or a text is invalid (INVALID_ARGUMENT) |
//! | 6 | the server refused the join otherwise (e.g. RESOURCE_EXHAUSTED: room full) |
//! | 130 | stopped by SIGINT or SIGTERM (after leaving cleanly) |

pub mod render;
pub mod safe;
pub mod scripted;
pub mod session;

use std::io::{IsTerminal, Write};
use std::thread::JoinHandle;

use rustyline::error::ReadlineError;
use rustyline::{
    Cmd, ConditionalEventHandler, Config, DefaultEditor, Event, EventContext, EventHandler,
    ExternalPrinter, KeyCode, KeyEvent, Modifiers, Movement, RepeatCount,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::client::session::{Session, SessionConfig, SessionError, Update};
use crate::signal::interrupted;
use render::Format;

/// Left normally.
pub const EXIT_OK: u8 = 0;
/// A local failure (terminal, standard output) or an unexpected one.
pub const EXIT_FAILURE: u8 = 1;
/// Bad command line, or no name to join with.
pub const EXIT_USAGE: u8 = 2;
/// The server cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The name is taken in the room.
pub const EXIT_NAME_TAKEN: u8 = 4;
/// The room, name or a text is invalid.
pub const EXIT_INVALID: u8 = 5;
/// The server refused the join for another reason.
pub const EXIT_REFUSED: u8 = 6;
/// Stopped by SIGINT or SIGTERM, after leaving cleanly.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The prompt of the input line.
const PROMPT: &str = "> ";
/// Lines rendered and not yet printed, at most.
const SCREEN_QUEUE: usize = 256;

/// What `h2chat chat` was asked to do.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// The server, `host:port`.
    pub addr: String,
    /// The room to join.
    pub room: String,
    /// The name to join as; asked for (or, scripted, read from the first input line) if `None`.
    pub name: Option<String>,
    /// How events are printed.
    pub format: Format,
}

/// Runs the chat client until the user leaves or the session fails; returns the exit code (see
/// the module documentation).
pub async fn run(options: ChatOptions) -> u8 {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        interactive(options).await
    } else {
        crate::client::scripted::run(options).await
    }
}

/// The exit code for a session error.
pub fn exit_code(error: &SessionError) -> u8 {
    match error {
        SessionError::Connect { .. } => EXIT_UNREACHABLE,
        SessionError::NameTaken(_) => EXIT_NAME_TAKEN,
        SessionError::Invalid(_) => EXIT_INVALID,
        SessionError::Refused(_) => EXIT_REFUSED,
    }
}

/// The line to show for an update, in `format` for events and as text for notices.
pub fn update_line(format: Format, update: &Update) -> String {
    match update {
        Update::Event(event) => render::event_line(format, event),
        other => render::notice_line(other).unwrap_or_default(),
    }
}

/// What the line-editing thread hands over.
enum Input {
    /// A submitted line.
    Line(String),
    /// The user asked to leave (`/quit`, `exit`, Ctrl-D, Ctrl-C).
    Quit,
    /// The terminal failed.
    Failed(String),
}

async fn interactive(options: ChatOptions) -> u8 {
    let config = Config::builder().auto_add_history(false).build();
    let mut editor = match DefaultEditor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("h2chat: cannot use the terminal: {e}");
            return EXIT_FAILURE;
        }
    };
    // Terminals the line editor cannot drive (TERM=dumb) get the line-by-line mode.
    let printer = match editor.create_external_printer() {
        Ok(printer) => printer,
        Err(_) => return crate::client::scripted::run(options).await,
    };
    let name = match options.name.clone() {
        Some(name) => name,
        None => {
            let asked = tokio::task::spawn_blocking(move || {
                let name = ask_name(&mut editor);
                (editor, name)
            })
            .await;
            match asked {
                Ok((back, Some(name))) => {
                    editor = back;
                    name
                }
                Ok((_, None)) => return EXIT_OK,
                Err(_) => return EXIT_FAILURE,
            }
        }
    };
    let session_config = SessionConfig::new(&options.addr, &options.room, &name);
    let (mut session, posts) = match Session::join(session_config).await {
        Ok(joined) => joined,
        Err(e) => {
            eprintln!("h2chat: {e}");
            return exit_code(&e);
        }
    };
    let (input_tx, mut input) = mpsc::unbounded_channel();
    for key in [
        KeyEvent(KeyCode::Enter, Modifiers::NONE),
        KeyEvent::ctrl('J'),
    ] {
        let submit = Submit {
            input: input_tx.clone(),
        };
        editor.bind_sequence(key, EventHandler::Conditional(Box::new(submit)));
    }
    let terminal = TerminalMode::save();
    std::thread::spawn(move || edit(editor, input_tx));
    let (screen, printing) = Screen::start(printer);
    screen
        .print(format!(
            "! joined {} as {name}; /who lists the members, /quit leaves",
            options.room
        ))
        .await;

    let mut editing = true;
    let mut signalled = false;
    let mut signal = std::pin::pin!(interrupted());
    loop {
        tokio::select! {
            line = input.recv(), if editing => match line {
                Some(Input::Line(line)) => on_line(&line, &session, &posts, &screen).await,
                Some(Input::Quit) | None => {
                    editing = false;
                    session.leave();
                }
                Some(Input::Failed(e)) => {
                    editing = false;
                    screen.print(format!("! terminal: {e}")).await;
                    session.leave();
                }
            },
            update = session.next() => match update {
                Some(update) => screen.print(update_line(options.format, &update)).await,
                None => break,
            },
            () = &mut signal, if !signalled => {
                signalled = true;
                session.leave();
            }
        }
    }
    let ended = session.end().await;
    if editing {
        // The session ended while the line editor still owns the terminal: let the queued lines
        // out through it, then take the terminal back, since `readline` will never return.
        drop(screen);
        let _ = tokio::task::spawn_blocking(move || printing.join()).await;
        terminal.restore();
    }
    match ended {
        Ok(()) if signalled => EXIT_INTERRUPTED,
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("h2chat: {e}");
            exit_code(&e)
        }
    }
}

/// Asks for a name until one is given; `None` if the user gives up (Ctrl-C, Ctrl-D).
fn ask_name(editor: &mut DefaultEditor) -> Option<String> {
    loop {
        match editor.readline("Your name: ") {
            Ok(line) if !line.trim().is_empty() => return Some(line.trim().to_string()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// The line-editing thread: runs `readline` until the user leaves. Lines come through [`Submit`].
fn edit(mut editor: DefaultEditor, input: mpsc::UnboundedSender<Input>) {
    loop {
        match editor.readline(PROMPT) {
            // Only if a binding other than ours accepted the line.
            Ok(line) => {
                let _ = input.send(Input::Line(line));
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => {
                let _ = input.send(Input::Quit);
                return;
            }
            Err(e) => {
                let _ = input.send(Input::Failed(e.to_string()));
                return;
            }
        }
    }
}

/// The Enter key: hands the line over and clears the input, without ending `readline`; leaving
/// commands end it as Ctrl-C would.
struct Submit {
    input: mpsc::UnboundedSender<Input>,
}

impl ConditionalEventHandler for Submit {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext<'_>) -> Option<Cmd> {
        let line = ctx.line();
        if is_quit(line) {
            return Some(Cmd::Interrupt);
        }
        if !line.trim().is_empty() {
            let _ = self.input.send(Input::Line(line.to_string()));
        }
        // `Some("")`, not `None`: rustyline replays a `None` replacement as the last insert.
        Some(Cmd::Replace(Movement::WholeBuffer, Some(String::new())))
    }
}

fn is_quit(line: &str) -> bool {
    matches!(line.trim(), "/quit" | "exit")
}

/// Handles one submitted line: a command, or text to post (pasted lines are posted one by one).
async fn on_line(line: &str, session: &Session, posts: &mpsc::Sender<String>, screen: &Screen) {
    for text in line.lines() {
        let command = text.trim();
        match command {
            "" => {}
            "/who" => session.who(),
            "/help" => {
                screen
                    .print(
                        "! /who lists the members; /quit or exit leaves (so do Ctrl-D and \
                         Ctrl-C); start a line with // to post one beginning with /"
                            .to_string(),
                    )
                    .await
            }
            _ if is_quit(command) => session.leave(),
            _ if command.starts_with('/') && !command.starts_with("//") => {
                screen
                    .print(format!("! unknown command {command}; /help lists them"))
                    .await
            }
            _ => {
                let text = text
                    .strip_prefix('/')
                    .filter(|t| t.starts_with('/'))
                    .unwrap_or(text);
                // A text over the server's limit comes back as a notice from the session.
                if let Err(TrySendError::Full(_)) = posts.try_send(text.to_string()) {
                    // Only a paste of hundreds of lines gets here; typing never does.
                    screen
                        .print(
                            "! not sent: too many messages are waiting for the server".to_string(),
                        )
                        .await;
                }
            }
        }
    }
}

/// Prints lines above the prompt from a thread of its own (the printer may block while the line
/// editor is busy).
struct Screen {
    lines: mpsc::Sender<String>,
}

impl Screen {
    fn start<P: ExternalPrinter + Send + 'static>(mut printer: P) -> (Screen, JoinHandle<()>) {
        let (lines, mut rx) = mpsc::channel::<String>(SCREEN_QUEUE);
        let thread = std::thread::spawn(move || {
            while let Some(mut line) = rx.blocking_recv() {
                line.push('\n');
                if printer.print(line).is_err() {
                    return;
                }
            }
        });
        (Screen { lines }, thread)
    }

    async fn print(&self, line: String) {
        let _ = self.lines.send(line).await;
    }
}

/// The terminal's mode before the line editor changed it, to put back if the process has to end
/// while `readline` still runs.
struct TerminalMode {
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl TerminalMode {
    fn save() -> TerminalMode {
        TerminalMode {
            #[cfg(unix)]
            saved: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        }
    }

    /// Restores the mode, turns bracketed paste off and clears the prompt line.
    fn restore(&self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            use nix::sys::termios::{tcsetattr, SetArg};
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, saved);
        }
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?2004l\r\x1b[2K");
        let _ = out.flush();
    }
}
