//! `h2chat token`: an HS256 bearer token minted from a secret file, for development (in
//! production tokens come from an identity provider).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use h2chat::auth::keys;
use h2chat::auth::mint::{self, TokenRequest};

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The HS256 secret file the server checks tokens with (--auth-hs256-secret-file).
    #[arg(long)]
    secret_file: PathBuf,
    /// The token's subject.
    #[arg(long)]
    sub: String,
    /// The name to chat as (default: the subject).
    #[arg(long)]
    name: Option<String>,
    /// Rooms the token may join: names or `prefix*` patterns, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// Lifetime: a number with s, m, h or d (e.g. 90s, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// The `iss` claim.
    #[arg(long)]
    issuer: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    audience: Option<String>,
}

/// `90s`, `5m`, `1h`, `2d`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m, 1h or 2d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

pub(crate) fn token(args: TokenArgs) -> Result<(), Box<dyn std::error::Error>> {
    // The same checks as the server's: a short secret is refused here too.
    keys::hs256_secret(&args.secret_file)?;
    let secret = std::fs::read(&args.secret_file)?;
    let request = TokenRequest {
        sub: args.sub,
        name: args.name,
        rooms: args.rooms,
        issuer: args.issuer,
        audience: args.audience,
        ttl: args.ttl,
        not_before: None,
    };
    println!("{}", mint::hs256(secret.trim_ascii(), &request)?);
    Ok(())
}
