//! How the programs write a number JSON cannot hold: NaN and the
//! infinities as the strings `"NaN"`, `"inf"` and `"-inf"` (`helixctl
//! --json`, `helix-ledger export`), never as `null`, which says no number
//! was there.

/// The string a non-finite number is written as; `None` for a finite one.
pub fn non_finite(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v.is_infinite() {
        Some(if v > 0.0 { "inf" } else { "-inf" })
    } else {
        None
    }
}

/// `v` as a JSON value: a number, or the string [`non_finite`] names.
pub fn json(v: f64) -> serde_json::Value {
    non_finite(v).map_or_else(|| v.into(), Into::into)
}
