//! How helixctl writes what it found in its tables: the figures several of
//! them show the same way. (JSON is [`crate::json`].)

/// Bytes as `256 MiB`, `4.0 KiB`.
pub fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A frame rate rounded to a whole number, `-` if there is none (yet).
pub fn rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_take_the_largest_unit_and_a_decimal_only_when_needed() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256 MiB");
    }

    #[test]
    fn a_missing_rate_is_a_dash() {
        assert_eq!((rate(None), rate(Some(1234.6))), ("-".to_owned(), "1235".to_owned()));
    }
}
