//! Parsing durations (`2s`, `500ms`, `1m`) and sizes (`256M`, `1G`, `512K`) from the command line.

use std::time::Duration;

/// The longest limit a duration flag takes.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses `500ms`, `2s`, `1.5s`, `1m` or a bare number of seconds: at least 1 ms, at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = split_unit(s);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 2s, 500ms or 1m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    let too_long = || {
        format!(
            "{s:?} is longer than the {} days a limit may be",
            MAX_DURATION.as_secs() / 86_400
        )
    };
    let duration = Duration::try_from_secs_f64(secs).map_err(|_| too_long())?;
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    if duration < Duration::from_millis(1) {
        return Err(format!("{s:?} is shorter than the 1 ms a limit must be"));
    }
    Ok(duration)
}

/// Parses `256M`, `1G`, `512K`, `64MiB` or a bare number of bytes (up to 1 TiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = split_unit(s);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 256M, 1G or 4096)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{s:?} is not a positive size"));
    }
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {s:?} (use K, M or G)"
            ))
        }
    };
    let bytes = value * mult as f64;
    if bytes > MAX_SIZE as f64 {
        return Err(format!("{s:?} is larger than the 1T a limit may be"));
    }
    Ok(bytes as u64)
}

/// The largest size a size flag takes.
pub const MAX_SIZE: u64 = 1 << 40;

/// Parses a memory limit: a size of at least 1M (less cannot hold a program).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    if bytes < 1 << 20 {
        return Err(format!(
            "{s:?} is below the 1M a memory limit must be (a program needs at least that)"
        ));
    }
    Ok(bytes)
}

/// The most processes a limit may allow: the kernel's largest `pid_max`.
pub const MAX_PIDS: u64 = 1 << 22;

/// Parses a process limit: 1 to [`MAX_PIDS`].
pub fn parse_pids(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of processes"))?;
    if !(1..=MAX_PIDS).contains(&n) {
        return Err(format!("{s:?} is not between 1 and {MAX_PIDS}"));
    }
    Ok(n)
}

fn split_unit(s: &str) -> (&str, &str) {
    let idx = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2y").is_err());
        // Item 8 and 12 of the hardening pass: no panic on overflow, and 0 means the same
        // (a refusal) however it is written.
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("31d").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("0ms").is_err());
        assert_eq!(parse_duration("720h").unwrap(), MAX_DURATION);
    }

    #[test]
    fn memory_and_pids_have_ranges() {
        for bad in ["0", "1", "1K", "1023K", "2T"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_memory("1M").unwrap(), 1 << 20);
        for bad in ["0", "-1", "99999999999", "18446744073709551615", "x"] {
            assert!(parse_pids(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_pids("64").unwrap(), 64);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5T").is_err());
    }
}
