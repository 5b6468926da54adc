//! Exact money amounts.
//!
//! Banking Service writes amounts as JSON numbers with at most two fraction digits and parses the
//! literal text, so we never let an amount pass through `f64`: numbers are read from the raw JSON
//! text and written back as raw JSON text.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Why a text is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is not a decimal number")]
    NotANumber,
    #[error("has more than 2 fraction digits")]
    TooPrecise,
    #[error("is out of range")]
    OutOfRange,
}

/// Parses `-42.15`, `250`, `10.1`: plain decimal notation, at most two fraction digits.
/// Exponents are refused: a bank that sends `1e3` has a bug we want to hear about.
pub fn parse_amount(text: &str) -> Result<Decimal, AmountError> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let valid_shape = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1
        && !digits.starts_with('.')
        && !digits.ends_with('.');
    if !valid_shape {
        return Err(AmountError::NotANumber);
    }
    if let Some((_, frac)) = digits.split_once('.')
        && frac.len() > 2
    {
        return Err(AmountError::TooPrecise);
    }
    // 15 integer digits is more than any balance needs and keeps sums of 1,000 amounts in range.
    let int_len = digits.split('.').next().map_or(0, str::len);
    if int_len > 15 {
        return Err(AmountError::OutOfRange);
    }
    Decimal::from_str(t).map_err(|_| AmountError::NotANumber)
}

/// Writes an amount as a JSON number literal, never in exponent form.
pub fn to_json_number(amount: &Decimal) -> Box<RawValue> {
    // `Decimal`'s Display is plain notation; normalise `-0` so Banking Service never sees it.
    let text = if amount.is_zero() {
        format!("{:.*}", amount.scale() as usize, Decimal::ZERO)
    } else {
        amount.to_string()
    };
    // A Decimal's Display output is always a valid JSON number.
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Reads a JSON number or a JSON string holding a number, from its literal text.
pub fn from_json_text(raw: &RawValue) -> Result<Decimal, AmountError> {
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(|_| AmountError::NotANumber)?;
        parse_amount(&inner)
    } else {
        parse_amount(text)
    }
}

/// `#[serde(with = "json_number")]` for `Decimal` fields on the wire.
pub mod json_number {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        to_json_number(value).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(d)?;
        from_json_text(&raw).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "json_number_opt", default, skip_serializing_if = "Option::is_none")]`.
pub mod json_number_opt {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => to_json_number(v).serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        let raw: Option<Box<RawValue>> = Deserialize::deserialize(d)?;
        match raw {
            None => Ok(None),
            Some(r) if r.get() == "null" => Ok(None),
            Some(r) => from_json_text(&r).map(Some).map_err(D::Error::custom),
        }
    }
}

/// Reads an amount written as a string (or an integer) by any serde format, DynamoDB items
/// included, where raw JSON text is not available.
struct DecimalTextVisitor;

impl serde::de::Visitor<'_> for DecimalTextVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a decimal amount as a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_amount(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }
}

/// Amounts stored as strings (DynamoDB items, the Bank Data API).
pub mod decimal_string {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(DecimalTextVisitor)
    }
}

/// Optional amounts stored as strings.
pub mod decimal_string_opt {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        struct Opt;
        impl<'de> serde::de::Visitor<'de> for Opt {
            type Value = Option<Decimal>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an optional decimal amount as a string")
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_any(DecimalTextVisitor).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_amount("-42.15").unwrap(), Decimal::new(-4215, 2));
        assert_eq!(
            parse_amount("10.1").unwrap(),
            parse_amount("10.10").unwrap()
        );
        assert_eq!(
            parse_amount("0.10").unwrap() + parse_amount("0.20").unwrap(),
            parse_amount("0.30").unwrap()
        );
    }

    #[test]
    fn refuses_what_banking_service_would_refuse() {
        assert_eq!(parse_amount("1.234"), Err(AmountError::TooPrecise));
        assert_eq!(parse_amount("1e3"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount(""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("-"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount(".5"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("5."), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("1.2.3"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("NaN"), Err(AmountError::NotANumber));
        assert_eq!(
            parse_amount("1234567890123456"),
            Err(AmountError::OutOfRange)
        );
    }

    #[test]
    fn writes_numbers_without_exponent_or_negative_zero() {
        #[derive(Serialize, Deserialize)]
        struct T {
            #[serde(with = "json_number")]
            a: Decimal,
        }
        let t = T {
            a: Decimal::new(25000, 2),
        };
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":250.00}"#);
        let neg_zero = T {
            a: -Decimal::new(0, 2),
        };
        assert_eq!(serde_json::to_string(&neg_zero).unwrap(), r#"{"a":0.00}"#);
        let back: T = serde_json::from_str(r#"{"a":-42.15}"#).unwrap();
        assert_eq!(back.a, Decimal::new(-4215, 2));
        let from_string: T = serde_json::from_str(r#"{"a":"-42.15"}"#).unwrap();
        assert_eq!(from_string.a, Decimal::new(-4215, 2));

        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(with = "decimal_string")]
            a: Decimal,
            #[serde(default, with = "decimal_string_opt")]
            b: Option<Decimal>,
        }
        let s = S {
            a: Decimal::new(-4215, 2),
            b: None,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, r#"{"a":"-42.15","b":null}"#);
        assert_eq!(serde_json::from_str::<S>(&text).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<S>(r#"{"a":"1.5","b":"2.25"}"#)
                .unwrap()
                .b,
            Some(Decimal::new(225, 2))
        );
        assert!(serde_json::from_str::<S>(r#"{"a":"1.555"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a":0.001}"#).is_err());
    }
}
