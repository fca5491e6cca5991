//! helixctl's JSON output (the schemas are in docs/helixctl.md): serde_json
//! with two rules of its own, kept here for every verb.
//!
//! - **Non-finite numbers are strings**: `"NaN"`, `"inf"`, `"-inf"`. JSON
//!   has no such numbers and serde_json writes `null`, which loses what the
//!   ring held (frames carry f64 bit-exact, and a peer may publish any
//!   bits). [`Finite`] checks every f64 and f32 that reaches the
//!   serializer, whatever type holds it (the library's types included), so
//!   no field can be missed. Build the output from typed values, not with
//!   `serde_json::json!`: that macro turns a non-finite number into `null`
//!   before this module sees it.
//! - **Nothing a terminal acts on is written raw.** serde_json escapes the
//!   C0 controls JSON requires (ESC among them); DEL, the C1 controls (CSI
//!   is U+009B) and the bidirectional overrides it leaves as they are. They
//!   can only stand inside strings, so writing them as `\uXXXX` escapes
//!   changes no value, and a reader name chosen by a peer cannot act on the
//!   terminal of an operator who reads the JSON.

use std::io::Write;

use anyhow::{Context, Result};
use serde::ser::{self, Serialize, Serializer};

use crate::format::acts_on_terminal;
use crate::shared::finite::non_finite;

/// Prints `v` as pretty JSON.
pub fn print<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(&Finite(v)).context("serialising the JSON output")?;
    println!("{}", terminal_safe(text));
    Ok(())
}

/// Writes `v` to `out` as JSON on one line (`tail --json`).
pub fn line<T: Serialize + ?Sized>(v: &T, out: &mut dyn Write) -> Result<()> {
    let text = serde_json::to_string(&Finite(v)).context("serialising the JSON output")?;
    writeln!(out, "{}", terminal_safe(text))?;
    Ok(())
}

/// JSON text with every character a terminal acts on that serde_json left
/// raw (DEL, C1 controls, bidirectional overrides) as a `\uXXXX` escape.
/// serde_json escapes C0 controls inside strings, so those still raw are
/// the layout's newlines, which stay: only DEL and above are looked at.
fn terminal_safe(json: String) -> String {
    let raw = |c: char| c >= '\u{7f}' && acts_on_terminal(c);
    if !json.chars().any(raw) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            // Every such character is in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `T`, serialised with its non-finite numbers as strings, at any depth.
pub struct Finite<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Finite<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Wrap(s))
    }
}

/// A serializer (or one of its compound serializers) that hands everything
/// to the one it wraps, numbers checked and nested values wrapped again.
struct Wrap<S>(S);

/// Methods that pass their one argument through unchanged.
macro_rules! pass {
    ($($method:ident($t:ty)),* $(,)?) => {
        $(fn $method(self, v: $t) -> Result<S::Ok, S::Error> {
            self.0.$method(v)
        })*
    };
}

/// Methods that open a compound value: the wrapped serializer's, wrapped.
macro_rules! open {
    ($($method:ident($($arg:ident: $t:ty),*) -> $compound:ident),* $(,)?) => {
        $(fn $method(self, $($arg: $t),*) -> Result<Self::$compound, S::Error> {
            self.0.$method($($arg),*).map(Wrap)
        })*
    };
}

impl<S: Serializer> Serializer for Wrap<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Wrap<S::SerializeSeq>;
    type SerializeTuple = Wrap<S::SerializeTuple>;
    type SerializeTupleStruct = Wrap<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Wrap<S::SerializeTupleVariant>;
    type SerializeMap = Wrap<S::SerializeMap>;
    type SerializeStruct = Wrap<S::SerializeStruct>;
    type SerializeStructVariant = Wrap<S::SerializeStructVariant>;

    pass!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        match non_finite(v.into()) {
            Some(name) => self.0.serialize_str(name),
            None => self.0.serialize_f32(v),
        }
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        match non_finite(v) {
            Some(name) => self.0.serialize_str(name),
            None => self.0.serialize_f64(v),
        }
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Finite(v))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(self, name: &'static str, i: u32, variant: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, i, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Finite(v))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        i: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_variant(name, i, variant, &Finite(v))
    }

    open!(
        serialize_seq(len: Option<usize>) -> SerializeSeq,
        serialize_tuple(len: usize) -> SerializeTuple,
        serialize_tuple_struct(name: &'static str, len: usize) -> SerializeTupleStruct,
        serialize_tuple_variant(name: &'static str, i: u32, variant: &'static str, len: usize) -> SerializeTupleVariant,
        serialize_map(len: Option<usize>) -> SerializeMap,
        serialize_struct(name: &'static str, len: usize) -> SerializeStruct,
        serialize_struct_variant(name: &'static str, i: u32, variant: &'static str, len: usize)
            -> SerializeStructVariant,
    );

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound serializers whose elements have no key: each element
/// wrapped, then `end`.
macro_rules! elements {
    ($($trait:ident::$method:ident),* $(,)?) => {
        $(impl<S: ser::$trait> ser::$trait for Wrap<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), S::Error> {
                self.0.$method(&Finite(v))
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        })*
    };
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// The compound serializers whose fields are named: each field wrapped,
/// skipped fields passed on, then `end`.
macro_rules! fields {
    ($($trait:ident),* $(,)?) => {
        $(impl<S: ser::$trait> ser::$trait for Wrap<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), S::Error> {
                self.0.serialize_field(key, &Finite(v))
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.0.skip_field(key)
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        })*
    };
}

fields!(SerializeStruct, SerializeStructVariant);

impl<S: ser::SerializeMap> ser::SerializeMap for Wrap<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Finite(k))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Finite(v))
    }

    // `#[serde(flatten)]` fields arrive here.
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(&mut self, k: &K, v: &V) -> Result<(), S::Error> {
        self.0.serialize_entry(&Finite(k), &Finite(v))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[derive(serde::Serialize)]
    struct Inner {
        ratio: f64,
        single: f32,
    }

    #[derive(serde::Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Tagged {
        Sample { value: f64 },
    }

    #[derive(serde::Serialize)]
    struct Outer {
        plain: f64,
        some: Option<f64>,
        none: Option<f64>,
        list: Vec<f64>,
        tuple: (f64, u8),
        map: BTreeMap<&'static str, f64>,
        #[serde(flatten)]
        inner: Inner,
        tagged: Tagged,
    }

    fn text<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::from_str(&serde_json::to_string(&Finite(v)).unwrap()).unwrap()
    }

    #[test]
    fn every_non_finite_number_at_any_depth_is_a_string_and_the_rest_is_unchanged() {
        let v = Outer {
            plain: f64::NAN,
            some: Some(f64::INFINITY),
            none: None,
            list: vec![f64::NEG_INFINITY, 0.25],
            tuple: (f64::NAN, 7),
            map: BTreeMap::from([("x", f64::INFINITY)]),
            inner: Inner { ratio: -f64::NAN, single: f32::NEG_INFINITY },
            tagged: Tagged::Sample { value: f64::NAN },
        };
        assert_eq!(
            text(&v),
            json!({
                "plain": "NaN", "some": "inf", "none": null, "list": ["-inf", 0.25], "tuple": ["NaN", 7],
                "map": { "x": "inf" }, "ratio": "NaN", "single": "-inf",
                "tagged": { "type": "sample", "value": "NaN" }
            })
        );
        let finite = Outer {
            plain: 1.5,
            some: Some(-2.0),
            none: None,
            list: vec![],
            tuple: (0.0, 1),
            map: BTreeMap::new(),
            inner: Inner { ratio: 1e300, single: 0.5 },
            tagged: Tagged::Sample { value: 3.0 },
        };
        assert_eq!(text(&finite), serde_json::to_value(&finite).unwrap());
    }

    #[test]
    fn characters_a_terminal_acts_on_are_escaped_and_read_back_unchanged() {
        let name = "a\u{1b}[2J\u{7f}\u{9b}2J\u{202e}b\u{e9}";
        let out = terminal_safe(serde_json::to_string_pretty(&json!({ "name": name })).unwrap());
        assert!(out.contains(r"\u001b[2J\u007f\u009b2J\u202eb") && out.contains('\u{e9}'), "{out}");
        assert!(!out.chars().any(|c| acts_on_terminal(c) && c != '\n'), "{out}");
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["name"], name);
    }
}
