//! `grpc-timeout`: 1 to 8 ASCII digits followed by one unit, `H M S m u n`.

use std::time::Duration;

use super::status::Status;

/// Most digits the spec allows in a `grpc-timeout` value.
const MAX_DIGITS: usize = 8;

/// Parses a `grpc-timeout` value. A malformed value is an INTERNAL status, as grpc-go answers.
pub fn parse(value: &[u8]) -> Result<Duration, Status> {
    let bad = || {
        Status::internal(format!(
            "malformed grpc-timeout {:?}: want 1-8 digits and one of H M S m u n",
            String::from_utf8_lossy(value)
        ))
    };
    let (unit, digits) = value.split_last().ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // At most 8 digits always fit in a u64.
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

/// Formats a duration as a `grpc-timeout` value, in the finest unit that fits in 8 digits.
pub fn format(d: Duration) -> String {
    const LIMIT: u128 = 100_000_000;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        // Round up so the peer never sees a shorter deadline than ours.
        let n = nanos.div_ceil(per);
        if n < LIMIT {
            return format!("{n}{unit}");
        }
    }
    "99999999H".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse(b"2H").ok(), Some(Duration::from_secs(7200)));
        assert_eq!(parse(b"3M").ok(), Some(Duration::from_secs(180)));
        assert_eq!(parse(b"1S").ok(), Some(Duration::from_secs(1)));
        assert_eq!(parse(b"250m").ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse(b"7u").ok(), Some(Duration::from_micros(7)));
        assert_eq!(
            parse(b"99999999n").ok(),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn malformed_values_are_internal() {
        for v in [
            &b""[..],
            b"S",
            b"123456789S",
            b"1x",
            b"-1S",
            b"1.5S",
            b" 1S",
        ] {
            let err = parse(v).err().map(|s| s.code());
            assert_eq!(err, Some(super::super::status::Code::Internal), "{v:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(86_400 * 400),
            Duration::from_nanos(5),
        ] {
            let back = parse(format(d).as_bytes()).unwrap_or_default();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
    }
}
