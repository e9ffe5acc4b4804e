//! Human durations for flags and the config file: `90s`, `15m`, `1h30m`, `500ms`.
//!
//! A bare number is refused on purpose: `600` could mean seconds or minutes, and a wrong guess
//! in a timeout is the kind of silent error this tool exists to avoid.
//!
//! Every configured duration has a floor and a ceiling ([`Bounds`]), checked when the config
//! file is read (the serde adaptors [`deadline`], [`request`], [`interval`], [`span`],
//! [`settle`], [`ttl`]): a zero timeout that never lets a gate pass and a huge one that
//! overflows `Instant` or `activeDeadlineSeconds` arithmetic are refused where they enter,
//! naming the key.

use std::time::Duration;

/// The floor and ceiling of a configured duration, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The shortest value accepted.
    pub min: Duration,
    /// The longest value accepted.
    pub max: Duration,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// A wait's deadline (a node Ready, the etcd snapshot, a probe, a drain, the upgrade script):
/// 1 s to 24 h. Zero would fail every wait; the ceiling keeps the Job's
/// `activeDeadlineSeconds` (their sum) and every `Instant` far from overflow.
pub const DEADLINE: Bounds = Bounds { min: secs(1), max: secs(DAY) };
/// One request or connection (Prometheus, the Pushgateway, Slack, the SSH connect): 1 s to
/// 10 min. Zero would time out every request, and a gate that cannot ask never passes.
pub const REQUEST: Bounds = Bounds { min: secs(1), max: secs(10 * 60) };
/// A re-check or retry interval, an SSH keepalive: 1 s to 1 h. Zero would hot-loop (or, for
/// the keepalive, turn it off).
pub const INTERVAL: Bounds = Bounds { min: secs(1), max: secs(HOUR) };
/// A span that may be zero (the alert wait: check once; the soak: none; the fallback delay:
/// at once; a grace period; the deadline margin): 0 s to 24 h.
pub const SPAN: Bounds = Bounds { min: Duration::ZERO, max: secs(DAY) };
/// The settle window: 0 s to 7 days. Zero asks for no quiet period; the gate still refuses a
/// node whose Ready condition is missing, has no time or changes in the future.
pub const SETTLE: Bounds = Bounds { min: Duration::ZERO, max: secs(7 * DAY) };
/// `ttlSecondsAfterFinished` of the chain Jobs: 1 h to 365 days (an i32 of seconds holds
/// 68 years). `status` and `report` read the finished Jobs, so they must outlive a chain step.
pub const TTL: Bounds = Bounds { min: secs(HOUR), max: secs(365 * DAY) };

impl Bounds {
    /// Whether `d` is within the bounds; the error says which.
    pub fn check(&self, d: Duration) -> Result<(), String> {
        if d < self.min || d > self.max {
            return Err(format!("must be between {} and {}", format(self.min), format(self.max)));
        }
        Ok(())
    }
}

/// Parses `1h30m`, `15m`, `600s`, `250ms` (units `h`, `m`, `s`, `ms`, summed left to right).
pub fn parse(input: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {}: expected e.g. 90s, 15m, 1h30m or 500ms", crate::names::shorten(input))
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    // Each unit once: `1h1h` read as 2h hid a typo (QA C).
    let mut seen: Vec<&str> = Vec::with_capacity(4);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        // Anything beyond u64 or a Duration is refused, never wrapped.
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let secs = |per: u64| n.checked_mul(per).map(Duration::from_secs).ok_or_else(bad);
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => secs(60)?,
            "h" => secs(3600)?,
            _ => return Err(bad()),
        };
        if seen.contains(&&rest[..unit_len]) {
            return Err(format!("{}: the unit {} is repeated", bad(), &rest[..unit_len]));
        }
        seen.push(&rest[..unit_len]);
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats the way [`parse`] reads: `1h30m`, `15m`, `45s`, `250ms`, `1h500ms`, `0s`
/// (sub-millisecond parts, which [`parse`] never produces, are dropped). `parse(format(d))`
/// gives `d` back for every duration of whole milliseconds.
pub fn format(d: Duration) -> String {
    let ms = d.subsec_millis();
    let mut secs = d.as_secs();
    if secs == 0 && ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// `#[serde(with = "crate::duration::serde_str")]` for `std::time::Duration` fields.
pub mod serde_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw: String = serde::Deserialize::deserialize(d)?;
        super::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Parses a duration and checks it against `bounds`; the error quotes the value.
pub fn parse_within(input: &str, bounds: Bounds) -> Result<Duration, String> {
    let d = parse(input)?;
    bounds.check(d).map_err(|r| format!("duration {} {r}", crate::names::shorten(input)))?;
    Ok(d)
}

macro_rules! bounded_serde {
    ($(#[$doc:meta])* $name:ident, $bounds:expr) => {
        $(#[$doc])*
        pub mod $name {
            use std::time::Duration;

            /// Writes the duration as [`super::format`] does.
            pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
                super::serde_str::serialize(d, s)
            }

            /// Reads a duration and checks its bounds.
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
                let raw: String = serde::Deserialize::deserialize(d)?;
                super::parse_within(&raw, $bounds).map_err(serde::de::Error::custom)
            }
        }
    };
}

bounded_serde!(
    /// `#[serde(with)]` for a [`DEADLINE`] duration.
    deadline,
    super::DEADLINE
);
bounded_serde!(
    /// `#[serde(with)]` for a [`REQUEST`] duration.
    request,
    super::REQUEST
);
bounded_serde!(
    /// `#[serde(with)]` for an [`INTERVAL`] duration.
    interval,
    super::INTERVAL
);
bounded_serde!(
    /// `#[serde(with)]` for a [`SPAN`] duration.
    span,
    super::SPAN
);
bounded_serde!(
    /// `#[serde(with)]` for the [`SETTLE`] window.
    settle,
    super::SETTLE
);
bounded_serde!(
    /// `#[serde(with)]` for the [`TTL`] of finished Jobs.
    ttl,
    super::TTL
);

/// `#[serde(with)]` for an optional [`SPAN`] duration written as `"30s"`, or absent / null.
pub mod opt_span {
    use std::time::Duration;

    /// Writes `null` or the duration.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or a duration within [`super::SPAN`].
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let raw: Option<String> = serde::Deserialize::deserialize(d)?;
        raw.map(|r| super::parse_within(&r, super::SPAN).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_ambiguous_or_malformed() {
        for bad in [
            "",
            "600",
            "10 m",
            "m",
            "1d",
            "-5s",
            "1.5h",
            "5sec",
            "s10",
            "99999999999999999999h",
            "5124095576030432h",
            "1h1h",
            "30m1h30m",
            "1s500ms500ms",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "error must name the input: {e}");
        }
    }

    #[test]
    fn bounds_refuse_zero_and_huge_values_naming_them() {
        assert_eq!(parse_within("5m", DEADLINE), Ok(Duration::from_secs(300)));
        let e = parse_within("0s", REQUEST).unwrap_err();
        assert!(e.contains("\"0s\"") && e.contains("between 1s and 10m"), "{e}");
        // Long (leading zeros) and beyond the bound; each unit once.
        let huge = format!("{}999999999999h", "0".repeat(120));
        let e = parse_within(&huge, DEADLINE).unwrap_err();
        assert!(e.contains("between 1s and 24h") && e.contains("more characters"), "{e}");
        assert!(parse_within("0s", SPAN).is_ok());
        assert!(parse_within("604800h", TTL).is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "15m", "45s", "250ms", "0s", "2h", "1h1m1s", "1h500ms"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
