//! Human durations for flags and the config file: `90s`, `15m`, `1h30m`, `500ms`.
//!
//! A bare number is refused on purpose: `600` could mean seconds or minutes, and a wrong guess
//! in a timeout is the kind of silent error this tool exists to avoid.

use std::time::Duration;

/// Parses `1h30m`, `15m`, `600s`, `250ms` (units `h`, `m`, `s`, `ms`, summed left to right).
pub fn parse(input: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {input:?}: expected e.g. 90s, 15m, 1h30m or 500ms");
    let s = input.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats the way [`parse`] reads: `1h30m`, `15m`, `45s`, `250ms`, `0s`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
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
        for bad in ["", "600", "10 m", "m", "1d", "-5s", "1.5h", "5sec", "s10"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "error must name the input: {e}");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "15m", "45s", "250ms", "0s", "2h", "1h1m1s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
