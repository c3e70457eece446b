//! Flag values checked at startup, and every flag settable from the environment.
//!
//! A value that would make the server useless (`--max-concurrent-streams 0`: every call hangs) or
//! that the wire cannot carry (`--max-message-bytes` past gRPC's 32-bit length prefix) is refused
//! before anything starts, with clap's usage error (exit 2) naming the flag and the allowed range:
//!
//! ```text
//! error: invalid value '0' for '--max-connections <MAX_CONNECTIONS>': must be a whole number, at least 1
//! ```
//!
//! Negative numbers reach these checks (instead of clap's `unexpected argument '-1'`), and
//! `H2CHAT_<FLAG>` sets any flag of `serve`, `stdio` and `chat` ([`with_env`]).

use std::net::{SocketAddr, ToSocketAddrs};

use clap::{ArgAction, Command};
use h2chat::cli::MAX_SECONDS;

/// The subcommands whose flags can come from the environment.
const ENV_SUBCOMMANDS: [&str; 3] = ["serve", "stdio", "chat"];

/// The prefix of the environment variable for each flag: `--max-rooms` is `H2CHAT_MAX_ROOMS`.
pub(crate) const ENV_PREFIX: &str = "H2CHAT_";

/// Gives every flag of the served subcommands an `H2CHAT_<FLAG>` variable (shown in `--help`;
/// the command line wins over the environment), lets negative numbers reach the value checks,
/// and lets a later flag override an earlier one.
pub(crate) fn with_env(mut cli: Command) -> Command {
    for name in ENV_SUBCOMMANDS {
        cli = cli.mut_subcommand(name, |sub| {
            // A flag given twice takes the last value, as most Unix tools do (a wrapper script
            // can append an override).
            sub.args_override_self(true).mut_args(|arg| {
                let settable = matches!(
                    arg.get_action(),
                    ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
                );
                // Only a flag that takes a value can take a negative one (clap insists).
                let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
                match arg.get_long().map(env_name) {
                    Some(var) if settable && takes_value => {
                        arg.env(var).allow_negative_numbers(true)
                    }
                    Some(var) if settable => arg.env(var),
                    _ => arg,
                }
            })
        });
    }
    cli
}

/// `max-rooms` → `H2CHAT_MAX_ROOMS`.
fn env_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// A whole number in `min..=max` (`max` = `None`: as large as `T` holds), as a clap value parser.
pub(crate) fn whole<T>(
    min: u64,
    max: Option<u64>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |text| {
        let allowed = match max {
            Some(max) => format!("must be a whole number from {min} to {max}"),
            None => format!("must be a whole number, at least {min}"),
        };
        let n: i128 = text.trim().parse().map_err(|_| allowed.clone())?;
        let in_range = n >= i128::from(min) && max.is_none_or(|max| n <= i128::from(max));
        u64::try_from(n)
            .ok()
            .filter(|_| in_range)
            .and_then(|n| T::try_from(n).ok())
            .ok_or(allowed)
    }
}

/// A finite number of at least `min` (`min_included` false: more than `min`), at most `max`.
pub(crate) fn decimal(
    min: f64,
    min_included: bool,
    max: Option<f64>,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let at_least = if min_included {
            format!("at least {min}")
        } else {
            format!("greater than {min}")
        };
        let allowed = match max {
            Some(max) => format!("must be a number {at_least}, at most {max}"),
            None => format!("must be a number {at_least}"),
        };
        let n: f64 = text.trim().parse().map_err(|_| allowed.clone())?;
        let above_min = if min_included { n >= min } else { n > min };
        (n.is_finite() && above_min && max.is_none_or(|max| n <= max))
            .then_some(n)
            .ok_or(allowed)
    }
}

/// Seconds, 0 allowed (0 usually means "none" or "off").
pub(crate) fn seconds_or_zero() -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    decimal(0.0, true, Some(MAX_SECONDS))
}

/// Seconds, more than 0.
pub(crate) fn seconds() -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    decimal(0.0, false, Some(MAX_SECONDS))
}

/// Where to listen: `HOST:PORT` with a host name or an IP address, resolved at startup.
#[derive(Clone, Debug)]
pub(crate) struct ListenAddr {
    /// As given.
    pub(crate) text: String,
    /// What it resolved to; the server listens on the first of them that it can bind.
    pub(crate) addrs: Vec<SocketAddr>,
}

/// Parses and resolves `HOST:PORT` for `serve --addr` (`localhost:50051`, `0.0.0.0:50051`,
/// `[::]:50051`).
pub(crate) fn listen_addr(text: &str) -> Result<ListenAddr, String> {
    check_host_port(text)?;
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{text} resolves to no address"));
    }
    Ok(ListenAddr {
        text: text.to_owned(),
        addrs,
    })
}

/// Checks `chat --addr`: `HOST:PORT` (resolved when connecting, so an unknown host is
/// "unreachable", while text that is no address at all is a usage error).
pub(crate) fn connect_addr(text: &str) -> Result<String, String> {
    check_host_port(text)?;
    Ok(text.to_owned())
}

/// `HOST:PORT`: a port number after the last colon, and a host (`[...]` around an IPv6 one).
fn check_host_port(text: &str) -> Result<(), String> {
    let usage =
        || "must be HOST:PORT, e.g. 127.0.0.1:50051, localhost:50051 or [::1]:50051".to_owned();
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(usage)?;
    port.parse::<u16>().map_err(|_| usage())?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    host_ok.then_some(()).ok_or_else(usage)
}

/// `--redis`: a URL the Redis client accepts (checked at startup, not connected to).
pub(crate) fn redis_url(text: &str) -> Result<String, String> {
    h2chat::services::chat::redis::RedisConfig::new(text, std::time::Duration::from_secs(1))?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_outside_the_range_are_refused_with_the_range() {
        let parse = whole::<u32>(1, Some(10));
        assert_eq!(parse("1"), Ok(1));
        assert_eq!(parse("10"), Ok(10));
        for bad in ["0", "11", "-1", "x", "1.5", ""] {
            assert_eq!(
                parse(bad),
                Err("must be a whole number from 1 to 10".into()),
                "{bad}"
            );
        }
        let parse = whole::<usize>(1, None);
        assert_eq!(
            parse("-3"),
            Err("must be a whole number, at least 1".into())
        );
        assert_eq!(
            parse("99999999999999999999999"),
            Err("must be a whole number, at least 1".into())
        );
    }

    #[test]
    fn decimals_must_be_finite_and_in_range() {
        assert_eq!(seconds()("0.5"), Ok(0.5));
        assert!(seconds()("0").is_err());
        assert_eq!(seconds_or_zero()("0"), Ok(0.0));
        for bad in ["-1", "NaN", "inf", "1e10", "soon"] {
            assert!(seconds_or_zero()(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_need_a_host_and_a_port() {
        for good in [
            "127.0.0.1:1",
            "[::1]:50051",
            "localhost:50051",
            "chat.example-1.org:80",
        ] {
            assert_eq!(connect_addr(good), Ok(good.to_owned()));
        }
        for bad in [
            "nonsense",
            "localhost",
            ":50051",
            "host:port",
            "a b:1",
            "host:70000",
        ] {
            assert!(connect_addr(bad).is_err(), "{bad}");
        }
        let local = listen_addr("localhost:0").expect("localhost resolves");
        assert!(
            local.addrs.iter().all(|a| a.ip().is_loopback()),
            "{local:?}"
        );
    }

    #[test]
    fn env_names_follow_the_long_flag() {
        assert_eq!(env_name("max-message-bytes"), "H2CHAT_MAX_MESSAGE_BYTES");
    }
}
