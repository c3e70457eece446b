//! Command-line value types shared by the subcommands of `h2chat`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration given in seconds on the command line (`2`, `0.25`): never negative, never NaN; a
/// value too large for a [`Duration`] saturates. The one parser of seconds for every flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Seconds, String> {
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        if secs.is_nan() || secs < 0.0 {
            return Err(format!("{s:?} is not a number of seconds (0 or more)"));
        }
        Ok(Seconds(
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
        ))
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
        assert_eq!("inf".parse(), Ok(Seconds(Duration::MAX)));
        assert!("-1".parse::<Seconds>().is_err());
        assert!("NaN".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
        assert_eq!(Seconds(Duration::from_millis(1500)).to_string(), "1.5");
    }
}
