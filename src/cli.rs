//! Command-line value types shared by the subcommands of `h2chat`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest duration a seconds flag takes: about 31 years, far beyond any useful timeout, and
/// small enough that adding it to a clock never overflows.
pub const MAX_SECONDS: f64 = 1e9;

/// Seconds as a [`Duration`], for every seconds flag: negative and NaN are 0, more than
/// [`MAX_SECONDS`] is [`MAX_SECONDS`] (the flags' own checks refuse both before this runs).
pub fn duration_from_secs(secs: f64) -> Duration {
    let secs = if secs.is_nan() {
        0.0
    } else {
        secs.clamp(0.0, MAX_SECONDS)
    };
    Duration::from_secs_f64(secs)
}

/// A duration given in seconds on the command line (`2`, `0.25`): never negative, never NaN, at
/// most [`MAX_SECONDS`] (more is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Seconds, String> {
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        if !(0.0..=MAX_SECONDS).contains(&secs) {
            return Err(format!(
                "{s:?} is not a number of seconds from 0 to {MAX_SECONDS}"
            ));
        }
        Ok(Seconds(duration_from_secs(secs)))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl From<Duration> for Seconds {
    fn from(d: Duration) -> Seconds {
        Seconds(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_fractions_and_refuse_negatives_and_nan() {
        assert_eq!("2".parse(), Ok(Seconds(Duration::from_secs(2))));
        assert_eq!("0.25".parse(), Ok(Seconds(Duration::from_millis(250))));
        assert!("inf".parse::<Seconds>().is_err());
        assert_eq!(
            duration_from_secs(f64::INFINITY),
            Duration::from_secs(1_000_000_000)
        );
        assert_eq!(duration_from_secs(-3.0), Duration::ZERO);
        assert!("-1".parse::<Seconds>().is_err());
        assert!("NaN".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
        assert_eq!(Seconds(Duration::from_millis(1500)).to_string(), "1.5");
    }
}
