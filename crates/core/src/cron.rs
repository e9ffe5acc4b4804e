//! CronJob schedules, checked by the rule the apiserver applies to `spec.schedule`.
//!
//! `ValidateCronJobSpec` (kubernetes `pkg/apis/batch/validation`) requires a non-empty schedule
//! without `TZ`/`CRON_TZ` ("use timeZone field instead") that `cron.ParseStandard` of
//! `github.com/robfig/cron/v3` accepts. No Rust crate implements that grammar: `croner` and
//! `cron` accept what robfig refuses (`L`, `W`, `#`, 6- and 7-field patterns, `7` for Sunday)
//! and refuse what it accepts (`5/15`, `*-3`, `?` in any field), and the difference is exactly
//! a CronJob the apiserver refuses (or one we refuse for nothing). So this is a port of
//! robfig's `parser.go` for the standard spec (five fields or a descriptor), quirks included,
//! used only to accept or refuse: the schedule is passed to the apiserver as written.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A schedule the apiserver accepts for `CronJob.spec.schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CronSchedule(String);

impl CronSchedule {
    /// Checks `spec`; the error is robfig's or the apiserver's reason (the caller names the input).
    pub fn parse(spec: &str) -> Result<Self, String> {
        if spec.is_empty() {
            return Err("must not be empty".into());
        }
        if spec.contains("TZ") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        parse_standard(spec)?;
        Ok(Self(spec.to_string()))
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CronSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|r| {
            serde::de::Error::custom(format!("invalid schedule {}: {r}", crate::names::shorten(&s)))
        })
    }
}

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)],
};

/// `Parser.Parse` with `Minute | Hour | Dom | Month | Dow | Descriptor` (`ParseStandard`).
fn parse_standard(spec: &str) -> Result<(), String> {
    if spec.starts_with('@') {
        return parse_descriptor(spec);
    }
    // strings.Fields: split on Unicode white space.
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}", fields.len()));
    }
    for (field, bounds) in fields.iter().zip([&MINUTES, &HOURS, &DOM, &MONTHS, &DOW]) {
        get_field(field, bounds)?;
    }
    Ok(())
}

/// `parseDescriptor`: the named schedules and `@every <duration>`.
fn parse_descriptor(spec: &str) -> Result<(), String> {
    match spec {
        "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly" => Ok(()),
        _ => match spec.strip_prefix("@every ") {
            Some(d) => {
                go_duration(d).map(|_| ()).map_err(|e| format!("failed to parse duration {spec}: {e}"))
            }
            None => Err(format!("unrecognized descriptor: {spec}")),
        },
    }
}

/// `getField`: comma-separated ranges; empty items are dropped (`strings.FieldsFunc`).
fn get_field(field: &str, r: &Bounds) -> Result<(), String> {
    for expr in field.split(',').filter(|e| !e.is_empty()) {
        get_range(expr, r)?;
    }
    Ok(())
}

/// `getRange`: `*`, `?`, `N`, `N-M`, each optionally `/step`.
fn get_range(expr: &str, r: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (r.min, r.max)
    } else {
        let start = parse_int_or_name(low_and_high[0], r)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], r)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = r.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < r.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", r.min));
    }
    if end > r.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", r.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn parse_int_or_name(expr: &str, r: &Bounds) -> Result<u64, String> {
    let lower = expr.to_lowercase();
    if let Some((_, v)) = r.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

/// `mustParseInt`: Go's `strconv.Atoi` (optional sign, decimal, 64-bit), then not negative.
fn must_parse_int(expr: &str) -> Result<u64, String> {
    let (negative, digits) = match expr.as_bytes().first() {
        Some(b'+') => (false, &expr[1..]),
        Some(b'-') => (true, &expr[1..]),
        _ => (false, expr),
    };
    let bad = || format!("failed to parse int from {expr}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if negative && n != 0 {
        return Err(format!("negative number ({expr}) not allowed"));
    }
    Ok(n as u64)
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`, in nanoseconds,
/// refused beyond ±2^63 ns.
fn go_duration(s: &str) -> Result<i128, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
        let mut part = whole.checked_mul(unit).ok_or_else(bad)?;
        let mut scale = unit;
        for d in frac.bytes().take(30) {
            scale /= 10;
            part += i128::from(d - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        if total > i128::from(i64::MAX) + 1 {
            return Err(bad());
        }
    }
    if !neg && total > i128::from(i64::MAX) {
        return Err(bad());
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_the_apiserver_accepts() {
        for ok in [
            "0 23 * * 0",
            "7 6 * * 1",
            "*/15 * * * *",
            "5/15 * * * *",
            "0 0 1,15 * *",
            "0 0 * JAN-mar SUN,sat",
            "0-59/5 0-23 1-31 1-12 0-6",
            "? ? ? ? ?",
            "*-3 * * * *",
            "0 0 1,,2 * *",
            " 0 0 * * * ",
            "+5 0 * * *",
            "@daily",
            "@midnight",
            "@every 1h30m",
            "@every 1.5h",
            "@every -1s",
        ] {
            assert!(CronSchedule::parse(ok).is_ok(), "{ok:?}: {:?}", CronSchedule::parse(ok));
        }
    }

    #[test]
    fn schedules_the_apiserver_refuses() {
        for bad in [
            "",
            "not a cron",
            "0 23 * *",
            "0 0 23 * * 0",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "5-1 * * * *",
            "*/0 * * * *",
            "1/2/3 * * * *",
            "1-2-3 * * * *",
            "-5 * * * *",
            "L * * * *",
            "0 0 L * *",
            "0 0 * * 1#2",
            "@reboot",
            "@every",
            "@every 1d",
            " @daily",
            "@daily ",
            "TZ=UTC 0 0 * * *",
            "CRON_TZ=UTC 0 0 * * *",
            "99999999999999999999 * * * *",
        ] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(go_duration(".5s"), Ok(500_000_000));
        assert_eq!(go_duration("0"), Ok(0));
        assert!(go_duration("1").is_err());
        assert!(go_duration(".s").is_err());
        assert!(go_duration("9999999999h").is_err());
    }
}
