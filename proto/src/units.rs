//! Sizes as people write them (`8GiB`, `500MB`, `1T`) and as DAOS prints them.
//!
//! Parsing follows DAOS's tools: a bare `K/M/G/T/P` (or `KB`, `MB`...) is a power
//! of 1000, `KiB/MiB/GiB/TiB/PiB` a power of 1024; a bare number is bytes.
//! Output is decimal with one decimal place below 10, as `dmg` prints it.

/// Parses a size. The error names the input and what is accepted.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid size {s:?}: expected a number with an optional unit such as 500MB, 8GiB or 1T"
        )
    };
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(v.round() as u64)
}

/// Formats bytes in decimal units: `0 B`, `512 B`, `8.6 GB`, `50 GB`.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let rounded = (v * 10.0).round() / 10.0;
    if rounded < 10.0 {
        format!("{rounded:.1} {}", UNITS[i])
    } else {
        format!("{:.0} {}", v.round(), UNITS[i])
    }
}

/// Formats a list of ranks as DAOS does: `[0-3,5]`.
pub fn format_ranks(ranks: &[u32]) -> String {
    let mut v = ranks.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    format!("[{}]", parts.join(","))
}

/// Parses a rank list such as `0-3,5` or `[0-3,5]`.
pub fn parse_ranks(s: &str) -> Result<Vec<u32>, String> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    let bad = || format!("invalid rank list {s:?}: expected ranks such as 0-3,5");
    let mut out = Vec::new();
    for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.trim().parse().map_err(|_| bad())?;
                let b: u32 = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 1_000_000 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1T").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 2 mib ").unwrap(), 2 << 20);
        for bad in ["", "GB", "12XB", "-1G", "1..2G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(8 << 30), "8.6 GB");
        assert_eq!(format_bytes(50_000_000_000), "50 GB");
        assert_eq!(format_bytes(1_000_000), "1.0 MB");
    }

    #[test]
    fn ranks() {
        assert_eq!(format_ranks(&[3, 0, 1, 2, 5]), "[0-3,5]");
        assert_eq!(format_ranks(&[]), "[]");
        assert_eq!(parse_ranks("[0-3,5]").unwrap(), vec![0, 1, 2, 3, 5]);
        assert!(parse_ranks("3-1").is_err());
        assert!(parse_ranks("a").is_err());
    }
}
