//! `h2chat chat`: the chat client's flags (server, room, name, output format, TLS, token) and
//! its run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use h2chat::client::credentials::TokenSource;
use h2chat::client::render::Format;
use h2chat::client::{self, ChatOptions};
use h2chat::grpc::client::ClientTls;

use crate::flags;
use crate::logging::{init_logging, LogFormat};

#[derive(Args)]
pub(crate) struct ChatArgs {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = flags::connect_addr)]
    addr: String,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Name to chat as; asked for if missing (scripted: the first input line).
    #[arg(long)]
    name: Option<String>,
    /// How room events are printed.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Speak TLS (the server's certificate is checked against the system's roots, or --ca).
    #[arg(long)]
    tls: bool,
    /// Trust this CA (PEM) instead of the system's roots; implies --tls.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Present this client certificate (PEM) for mTLS; implies --tls.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Check the server's certificate against this name instead of the host in --addr.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// A file holding the bearer token to send; read again on every reconnect (else the token
    /// in H2CHAT_TOKEN, if set).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl ChatArgs {
    /// The TLS settings asked for, if any.
    fn tls(&self) -> Result<Option<ClientTls>, String> {
        if !(self.tls || self.ca.is_some() || self.cert.is_some()) {
            return Ok(None);
        }
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let tls = ClientTls::new(self.ca.as_deref(), identity).map_err(|e| e.to_string())?;
        Ok(Some(match &self.tls_server_name {
            Some(name) => tls.with_server_name(name),
            None => tls,
        }))
    }

    /// Where the token comes from: --token-file, else `H2CHAT_TOKEN`.
    fn token(&self) -> Option<TokenSource> {
        match &self.token_file {
            Some(path) => Some(TokenSource::File(path.clone())),
            None => std::env::var("H2CHAT_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(TokenSource::Value),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// `[14:40:12] alice: hi`, `* bob joined`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs the chat client; the runtime is shut down without waiting for a pending read of stdin.
pub(crate) fn chat(runtime: tokio::runtime::Runtime, args: ChatArgs) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        if let Err(e) = init_logging(None, LogFormat::Text) {
            eprintln!("h2chat: {e}");
            return ExitCode::from(2);
        }
    }
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("h2chat: {e}");
            return ExitCode::from(client::EXIT_USAGE);
        }
    };
    let token = args.token();
    let options = ChatOptions {
        addr: args.addr,
        room: args.room,
        name: args.name,
        format: match args.format {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
        },
        tls,
        token,
    };
    let code = runtime.block_on(client::run(options));
    runtime.shutdown_background();
    ExitCode::from(code)
}
