//! `h2chat chat` driven by a script: standard input is not a terminal.
//!
//! Each input line is posted as one message, as is (a trailing `\r` is dropped; empty lines are
//! skipped, the server would not post them; nothing is a command). Without `--name`, the first line
//! is the name. Room events go to standard output, one line each, as text or JSON; notices
//! (reconnecting, reconnected, gaps in what this client could confirm) go to standard error.
//!
//! At the end of input the client leaves once the server has echoed every line it posted, so
//! everything it posted is in the room (and in its own output) when it exits. Lines are read no
//! faster than the session takes them: a server that slows posting down (its post rate limit, or
//! HTTP/2 flow control) slows the reading of input down, and nothing is dropped.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::client::options::{finish, join, update_line, ChatOptions, EXIT_FAILURE, EXIT_USAGE};
use crate::client::render::Format;
use crate::client::session::Update;
use crate::signal::interrupted;

/// Runs the scripted client; returns the exit code.
pub async fn run(options: ChatOptions) -> u8 {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let name = match options.known_name() {
        Some(name) => name,
        None => match lines.next_line().await {
            Ok(Some(line)) => line.trim().to_string(),
            Ok(None) => {
                eprintln!("h2chat: no name: give --name, or the name as the first line of input");
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("h2chat: reading the name from standard input: {e}");
                return EXIT_FAILURE;
            }
        },
    };
    let config = options.session_config(name);
    let (mut session, posts) = match join(config).await {
        Ok(joined) => joined,
        Err(code) => return code,
    };
    let mut posts = Some(posts);
    let mut next_post: Option<String> = None;
    let mut input_open = true;
    let mut stdout = tokio::io::stdout();
    let mut failed = false;
    let mut signalled = false;
    let mut signal = std::pin::pin!(interrupted());
    loop {
        // Set when the posts sender is to be dropped (it is borrowed during the select).
        let mut done_posting = false;
        tokio::select! {
            line = lines.next_line(), if input_open && next_post.is_none() => match line {
                Ok(Some(line)) => {
                    let text = line.strip_suffix('\r').unwrap_or(&line);
                    if !text.is_empty() {
                        next_post = Some(text.to_string());
                    }
                }
                Ok(None) => {
                    input_open = false;
                    done_posting = true;
                }
                Err(e) => {
                    eprintln!("h2chat: reading standard input: {e}");
                    input_open = false;
                    done_posting = true;
                    failed = true;
                }
            },
            permit = reserve(&posts), if next_post.is_some() => match permit {
                Some(permit) => {
                    if let Some(text) = next_post.take() {
                        permit.send(text);
                    }
                }
                None => next_post = None,
            },
            update = session.next() => match update {
                Some(update) => {
                    if let Err(e) = show(&mut stdout, options.format, &update).await {
                        eprintln!("h2chat: writing standard output: {e}");
                        failed = true;
                        session.leave();
                    }
                }
                None => break,
            },
            () = &mut signal, if !signalled => {
                signalled = true;
                session.leave();
            }
        }
        if done_posting {
            // No more posts: the session leaves once every one is echoed.
            posts = None;
        }
    }
    finish(session.end().await, failed, signalled)
}

/// Events to standard output, notices to standard error.
async fn show(
    stdout: &mut tokio::io::Stdout,
    format: Format,
    update: &Update,
) -> std::io::Result<()> {
    let line = update_line(format, update);
    if !matches!(update, Update::Event(_)) {
        eprintln!("{line}");
        return Ok(());
    }
    stdout.write_all(line.as_bytes()).await?;
    stdout.write_all(b"\n").await?;
    // Whoever reads the output sees each event as it happens.
    stdout.flush().await
}

/// Room for one post; `None` once the session no longer takes posts. Pending forever without a
/// sender.
async fn reserve(posts: &Option<mpsc::Sender<String>>) -> Option<mpsc::Permit<'_, String>> {
    match posts {
        Some(posts) => posts.reserve().await.ok(),
        None => std::future::pending().await,
    }
}
