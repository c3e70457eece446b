//! `h2chat chat` in a terminal: the line-editing front.
//!
//! The input line is edited with `rustyline`. Incoming lines are printed through its external
//! printer, which clears the prompt line, prints, and redraws the prompt with what was being
//! typed, so typing is never garbled. Enter does not end `readline`: a key binding hands the line
//! over and clears the input, so the line only appears once, when the server's echo of it
//! arrives. `/quit`, `exit`, Ctrl-D on an empty line and Ctrl-C leave: the call is cancelled and
//! the room records the leave with reason `LEFT`.

use std::io::Write;
use std::thread::JoinHandle;

use rustyline::error::ReadlineError;
use rustyline::{
    Cmd, ConditionalEventHandler, Config, DefaultEditor, Event, EventContext, EventHandler,
    ExternalPrinter, KeyCode, KeyEvent, Modifiers, Movement, RepeatCount,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::client::options::{finish, join, update_line, ChatOptions, EXIT_FAILURE, EXIT_OK};
use crate::client::session::Session;
use crate::signal::interrupted;

/// The prompt of the input line.
const PROMPT: &str = "> ";
/// Lines rendered and not yet printed, at most.
const SCREEN_QUEUE: usize = 256;

/// What the line-editing thread hands over.
enum Input {
    /// A submitted line.
    Line(String),
    /// The user asked to leave (`/quit`, `exit`, Ctrl-D, Ctrl-C).
    Quit,
    /// The terminal failed.
    Failed(String),
}

/// Runs the interactive front; returns the exit code.
pub async fn run(options: ChatOptions) -> u8 {
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
    let name = match options.known_name() {
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
    let session_config = options.session_config(&name);
    let (mut session, posts) = match join(session_config).await {
        Ok(joined) => joined,
        Err(code) => return code,
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
    finish(ended, false, signalled)
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
