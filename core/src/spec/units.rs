//! Durations (`90s`, `30m`, `1h30m`), memory quantities (`512Mi`, `2Gi`, `1G`) and CPU amounts
//! (`2`, `0.5`, `500m`): parsing into exact integers, with messages that say what was expected.
//! Pure functions over strings.

use std::time::Duration;

pub const DURATION_HELP: &str = "write durations like `90s`, `30m`, `1h30m` or `2d` (units: ms, s, m, h, d)";
pub const MEMORY_HELP: &str =
    "write memory like `512Mi`, `2Gi` or `1G` (suffixes Ki, Mi, Gi, Ti, K, M, G, T) or a number of bytes";
pub const CPUS_HELP: &str = "write cpus as a number like `2` or `0.5`, or as millicores like `500m`";

/// Parses one or more `<integer><unit>` groups.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.contains(char::is_whitespace) {
        return Err(format!("`{s}` is not a duration: write it without spaces"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    let mut last_unit_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{s}` is not a duration: expected a number at `{rest}`"));
        }
        if rest[digits..].starts_with('.') {
            return Err(format!("`{s}` has a fraction: write whole units, like `1h30m` for `1.5h`"));
        }
        let number: u128 = rest[..digits].parse().map_err(|_| format!("`{s}` is too long a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let (rank, millis) = match unit {
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
            "" => return Err(format!("`{s}` has no unit: write `{s}s` for seconds")),
            other => return Err(format!("unknown unit `{other}` in `{s}`")),
        };
        if last_unit_rank != usize::MAX && rank <= last_unit_rank {
            return Err(format!("units in `{s}` must go from largest to smallest, each once"));
        }
        last_unit_rank = rank;
        total = total.saturating_add(number.saturating_mul(millis));
        rest = &rest[unit_len..];
    }
    // Ten years is long enough for any timeout or backoff.
    if total > 10 * 365 * 86_400_000 {
        return Err(format!("`{s}` is longer than ten years"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Formats a duration the way pipeline files write it (`1h30m`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses a memory quantity into bytes: binary (`Ki`..`Ti`) or decimal (`K`/`k`..`T`) suffixes,
/// an optional fraction (`1.5Gi`), or plain bytes.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "mi" | "gi" | "ki" | "ti" | "MB" | "GB" | "KB" | "TB" | "m" | "g" | "Mb" | "Gb" => {
            let fixed = match suffix.chars().next() {
                Some('k' | 'K') => "Ki",
                Some('m' | 'M') => "Mi",
                Some('g' | 'G') => "Gi",
                _ => "Ti",
            };
            return Err(format!("unknown memory suffix `{suffix}` in `{s}`: did you mean `{number}{fixed}`?"));
        }
        other => return Err(format!("unknown memory suffix `{other}` in `{s}`")),
    };
    if number.is_empty() {
        return Err(format!("`{s}` is not a memory quantity"));
    }
    if number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
        return Err(format!("`{s}` is not a memory quantity"));
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().map_err(|_| format!("`{s}` is too large"))?;
    let mut bytes = whole.checked_mul(factor).ok_or_else(|| format!("`{s}` is too large"))?;
    if !frac.is_empty() {
        let digits = frac.len().min(12) as u32;
        let frac: u64 = frac[..digits as usize].parse().map_err(|_| format!("`{s}` is not a memory quantity"))?;
        bytes = bytes.saturating_add((frac as u128 * factor as u128 / 10u128.pow(digits)) as u64);
    }
    if bytes == 0 {
        return Err("memory must be more than 0".into());
    }
    Ok(bytes)
}

/// Formats bytes with the largest binary suffix that divides them.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{suffix}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Parses a CPU amount into millicores: `2`, `0.5`, `500m`.
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    let s = text.trim();
    let millis = if let Some(m) = s.strip_suffix('m') {
        m.parse::<u32>().map_err(|_| format!("`{s}` is not a CPU amount"))?
    } else {
        let cpus: f64 = s.parse().map_err(|_| format!("`{s}` is not a CPU amount"))?;
        if !cpus.is_finite() || cpus < 0.0 {
            return Err(format!("`{s}` is not a CPU amount"));
        }
        let millis = (cpus * 1000.0).round();
        if millis > 1_000_000.0 {
            return Err(format!("`{s}` cpus is more than any machine has"));
        }
        millis as u32
    };
    if millis == 0 {
        return Err("cpus must be more than 0".into());
    }
    if millis > 1_000_000 {
        return Err(format!("`{s}` cpus is more than any machine has"));
    }
    Ok(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("90s", 90_000, "1m30s"),
            ("30m", 1_800_000, "30m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("250ms", 250, "250ms"),
            ("2d", 172_800_000, "2d"),
            ("1m30s500ms", 90_500, "1m30s500ms"),
        ];
        for (text, ms, canonical) in ok {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
            assert_eq!(format_duration(Duration::from_millis(ms)), canonical);
        }
        for bad in ["", "90", "5 minutes", "1.5h", "30m1h", "1h1h", "s", "-1s", "99999999999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_duration("90").unwrap_err().contains("`90s`"));
    }

    #[test]
    fn memory() {
        let ok = [
            ("512Mi", 512 << 20),
            ("2Gi", 2 << 30),
            ("1G", 1_000_000_000),
            ("1.5Gi", 3 << 29),
            ("1024", 1024),
            ("100k", 100_000),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_memory(text), Ok(bytes), "{text}");
        }
        for bad in ["", "2GB", "Gi", "1.2.3Gi", "0", "-1Gi", "99999999999Ti", "2 Gi"] {
            assert!(parse_memory(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_memory("2GB").unwrap_err().contains("`2Gi`"));
        assert_eq!(format_memory(2 << 30), "2Gi");
        assert_eq!(format_memory(1_000_000_000), "1000000000");
    }

    #[test]
    fn cpus() {
        for (text, millis) in [("2", 2000), ("0.5", 500), ("500m", 500), ("1.25", 1250)] {
            assert_eq!(parse_cpus(text), Ok(millis), "{text}");
        }
        for bad in ["0", "0m", "-1", "two", "m", "inf", "NaN", "1e9"] {
            assert!(parse_cpus(bad).is_err(), "{bad} should be rejected");
        }
    }
}
