//! How the CLI prints and parses values the way Docker's CLI does: tables through a tabwriter with
//! Docker's settings, human durations ("3 minutes"), Go duration strings ("1m30s"), byte sizes
//! ("512MiB"), and the parsers for duration, memory and CPU flags.
//!
//! Pure functions only: no I/O, so every shape can be checked against Docker's golden files.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::time::Duration;

use shoal_core::stack::units;

/// Docker's tabwriter settings (`cli/command/formatter/formatter.go`): minwidth 10, padding 3.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// A table rendered like Go's `text/tabwriter` with Docker's settings: every cell but the last of a
/// row is padded to its column's width (at least 10, else the widest cell + 3); the last cell is
/// written as is, so a row whose trailing cells are empty ends in spaces, as Docker's do.
#[derive(Debug, Default, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { rows: vec![header.into_iter().map(Into::into).collect()] }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The rendered table, one `\n`-terminated line per row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        // Width of every column that is followed by another cell (tab-terminated in Go's terms).
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                widths[i] = widths[i].max(display_width(cell) + PADDING);
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < row.len() {
                    let width = widths[i].max(MIN_WIDTH);
                    out.extend(std::iter::repeat_n(' ', width.saturating_sub(display_width(cell))));
                }
            }
            out.push('\n');
        }
        out
    }
}

fn display_width(text: &str) -> usize {
    text.chars().count()
}

/// Docker's `PrettyPrint`: the first letter capitalised (`ready` → `Ready`).
pub fn pretty(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// go-units `HumanDuration`: "Less than a second", "1 second", "3 minutes", "About an hour", …
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (duration.as_secs_f64() / 3600.0 + 0.5) as u64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", seconds / 3600 / 24 / 365)
}

/// The `CURRENT STATE` cell of a task table: `Running 3 minutes ago`.
pub fn state_since(state: &str, timestamp_ms: u64, now_ms: u64) -> String {
    let ago = Duration::from_millis(now_ms.saturating_sub(timestamp_ms));
    format!("{} {} ago", pretty(state), human_duration(ago).to_lowercase())
}

/// Go's `time.Duration.String()` for a whole number of milliseconds: `0s`, `500ms`, `10s`, `1m30s`,
/// `1h0m0s`, `1.5s`. Used where Docker prints a duration field (`Delay: 10s`).
pub fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let seconds = (ms / 1000) % 60;
    let millis = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h{minutes}m");
    } else if minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if millis > 0 {
        let fraction = format!("{millis:03}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// go-units `BytesSize`: binary units with four significant digits (`10MiB`, `1.5GiB`, `512B`).
pub fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", four_significant(size), UNITS[unit])
}

/// Go's `%.4g` for the sizes above: four significant digits, trailing zeros dropped.
fn four_significant(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let digits_before_point = value.abs().log10().floor() as i32 + 1;
    let decimals = (4 - digits_before_point).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// CPUs as Docker shows them: nano-CPUs / 1e9 (`0.5`, `2`).
pub fn cpus(nano_cpus: u64) -> String {
    let value = nano_cpus as f64 / 1e9;
    format!("{value}")
}

/// A flag value that could not be parsed; the message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

// The value syntaxes are shared with compose files: one parser each, in `shoal_core::stack::units`.

/// A Go duration (`5s`, `1m30s`, `300ms`, `1h`, `1.5s`, `0`), as docker's duration flags take, in ms.
pub fn parse_duration(text: &str) -> Result<u64, ParseError> {
    units::duration_ms(text).map_err(|expected| ParseError(format!("invalid duration {text:?}: {expected}")))
}

/// Docker's `--since` for logs, in nanoseconds since the Unix epoch: a Go duration before `now_ns`
/// (`10m`), Unix seconds with optional nanoseconds (`1732550400.5`), or an RFC 3339 date
/// (`2026-11-25T16:00:00Z`; without a zone, `2026-11-25T16:00:00` and `2026-11-25` are local time).
pub fn parse_since(text: &str, now_ns: u64) -> Result<u64, ParseError> {
    use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};
    if let Ok(ms) = units::duration_ms(text) {
        return Ok(now_ns.saturating_sub(ms.saturating_mul(1_000_000)));
    }
    let bad = || {
        ParseError(format!(
            "invalid value {text:?} for --since: use a duration (10m), Unix seconds (1732550400) or an RFC 3339 \
             date (2026-11-25T16:00:00Z)"
        ))
    };
    if let Some((secs, nanos)) = text.split_once('.').or(Some((text, ""))) {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(secs) && (nanos.is_empty() || (digits(nanos) && nanos.len() <= 9)) {
            let secs: u64 = secs.parse().map_err(|_| bad())?;
            let nanos: u64 = if nanos.is_empty() { 0 } else { format!("{nanos:0<9}").parse().map_err(|_| bad())? };
            return secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(nanos)).ok_or_else(bad);
        }
    }
    let local = |naive: NaiveDateTime| Local.from_local_datetime(&naive).earliest();
    let time = DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .or_else(|| local(NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()?)?.timestamp_nanos_opt())
        .or_else(|| {
            local(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?)?.timestamp_nanos_opt()
        })
        .ok_or_else(bad)?;
    u64::try_from(time).map_err(|_| bad())
}

/// Go's `RFC3339NanoFixed` in UTC (`2026-11-25T16:00:00.000000000Z`), as `--timestamps` prints.
pub fn rfc3339_nano_fixed(time_ns: u64) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(i64::try_from(time_ns).unwrap_or(i64::MAX));
    time.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// go-units `RAMInBytes`: `512M`, `1G`, `1gb`, `64m`, `1024` (bytes); binary multiples.
pub fn parse_memory(text: &str) -> Result<u64, ParseError> {
    units::memory_bytes(text).map_err(|expected| ParseError(format!("invalid memory size {text:?}: {expected}")))
}

/// Docker's `NanoCPUs` flag: a decimal number of CPUs (`0.5`, `2`), in nano-CPUs.
pub fn parse_cpus(text: &str) -> Result<u64, ParseError> {
    units::nano_cpus(text).map_err(|expected| ParseError(format!("invalid number of CPUs {text:?}: {expected}")))
}

/// `sortorder.NaturalLess`: digit runs compare by value, so `node-2` sorts before `node-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let a_len = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let b_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let a_num = trim_zeros(&a[..a_len]);
                let b_num = trim_zeros(&b[..b_len]);
                let order = a_num.len().cmp(&b_num.len()).then_with(|| a_num.cmp(b_num)).then(a_len.cmp(&b_len));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[a_len..];
                b = &b[b_len..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().position(|&d| d != b'0').unwrap_or(digits.len());
    &digits[start..]
}

/// Docker's `TruncateID`: the first 12 characters.
pub fn truncate_id(id: &str) -> &str {
    shoal_core::api::short_id(id)
}

/// Cuts `text` to `max` characters, ending with `…` when it was longer (the task ERROR column).
pub fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Go's name for this machine's architecture (`amd64`, `arm64`), as Docker prints it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_unix_seconds_and_dates() {
        let now = 1_764_086_400_000_000_000; // 2025-11-25T16:00:00Z
        assert_eq!(parse_since("10m", now), Ok(now - 600_000_000_000));
        assert_eq!(parse_since("1764086400", now), Ok(now));
        assert_eq!(parse_since("1764086400.5", now), Ok(now + 500_000_000));
        assert_eq!(parse_since("2025-11-25T16:00:00Z", now), Ok(now));
        assert_eq!(parse_since("2025-11-25T17:00:00+01:00", now), Ok(now));
        assert!(parse_since("2025-11-25", now).is_ok(), "a local date");
        let err = parse_since("yesterday", now).unwrap_err();
        assert!(err.0.contains("invalid value \"yesterday\" for --since"), "{err}");
        assert!(parse_since("1.1234567890", now).is_err(), "at most nine digits of nanoseconds");
        assert_eq!(rfc3339_nano_fixed(now + 5), "2025-11-25T16:00:00.000000005Z");
    }
}
