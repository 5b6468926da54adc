//! A JSON tree that keeps the literal text of every number, so amounts are parsed exactly
//! (serde_json's `Value` would go through `f64` without `arbitrary_precision`).

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Num(&'a str),
    Str(String),
    Arr(Vec<Node<'a>>),
    Obj(BTreeMap<String, Node<'a>>),
}

impl<'a> Node<'a> {
    pub fn parse(text: &'a str) -> Result<Node<'a>, serde_json::Error> {
        let raw: &'a RawValue = serde_json::from_str(text)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: &'a RawValue) -> Result<Node<'a>, serde_json::Error> {
        let s = raw.get().trim();
        match s.as_bytes().first() {
            Some(b'{') => {
                let m: BTreeMap<String, &'a RawValue> = serde_json::from_str(s)?;
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    out.insert(k, Self::from_raw(v)?);
                }
                Ok(Node::Obj(out))
            }
            Some(b'[') => {
                let v: Vec<&'a RawValue> = serde_json::from_str(s)?;
                v.into_iter()
                    .map(Self::from_raw)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Node::Arr)
            }
            Some(b'"') => Ok(Node::Str(serde_json::from_str(s)?)),
            Some(b't') | Some(b'f') => Ok(Node::Bool(serde_json::from_str(s)?)),
            Some(b'n') => Ok(Node::Null),
            _ => Ok(Node::Num(s)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Obj(m) => m.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Num(_) => "number",
            Node::Str(_) => "string",
            Node::Arr(_) => "array",
            Node::Obj(_) => "object",
        }
    }

    pub fn to_owned_node(&self) -> OwnedNode {
        match self {
            Node::Null => OwnedNode::Null,
            Node::Bool(b) => OwnedNode::Bool(*b),
            Node::Num(n) => OwnedNode::Num((*n).to_string()),
            Node::Str(s) => OwnedNode::Str(s.clone()),
            Node::Arr(v) => OwnedNode::Arr(v.iter().map(Node::to_owned_node).collect()),
            Node::Obj(m) => OwnedNode::Obj(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_owned_node()))
                    .collect(),
            ),
        }
    }
}

/// Owned form of [`Node`], serialised with numbers written verbatim.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedNode {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<OwnedNode>),
    Obj(BTreeMap<String, OwnedNode>),
}

impl OwnedNode {
    pub fn get(&self, key: &str) -> Option<&OwnedNode> {
        match self {
            OwnedNode::Obj(m) => m.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            OwnedNode::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for OwnedNode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OwnedNode::Null => s.serialize_unit(),
            OwnedNode::Bool(b) => s.serialize_bool(*b),
            OwnedNode::Num(n) => serialize_number(n, s),
            OwnedNode::Str(v) => s.serialize_str(v),
            OwnedNode::Arr(v) => v.serialize(s),
            OwnedNode::Obj(m) => m.serialize(s),
        }
    }
}

/// Writes already-valid number text as a JSON number (a string if it is somehow not one).
fn serialize_number<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    match RawValue::from_string(text.to_string()) {
        Ok(raw) => raw.serialize(s),
        Err(_) => s.serialize_str(text),
    }
}

/// A decimal written as a JSON number (not a string), exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct JsonDecimal(pub Decimal);

impl Serialize for JsonDecimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_number(&self.0.to_string(), s)
    }
}

impl<'de> serde::Deserialize<'de> for JsonDecimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = serde::Deserialize::deserialize(d)?;
        let t = raw.get().trim().trim_matches('"');
        Decimal::from_str(t)
            .map(JsonDecimal)
            .map_err(serde::de::Error::custom)
    }
}

/// Why a number is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    NotANumber,
    Exponent,
    TooManyFractionDigits,
    OutOfRange,
}

impl AmountError {
    pub fn message(&self) -> &'static str {
        match self {
            AmountError::NotANumber => "must be a JSON number",
            AmountError::Exponent => "exponent notation is not allowed",
            AmountError::TooManyFractionDigits => "at most 2 fraction digits",
            AmountError::OutOfRange => "number out of range",
        }
    }
}

/// Parses an amount from the literal JSON number text: exact, at most 2 fraction digits as
/// written (`10.100` is refused like `10.101`: the rule is on the text, not on the value).
pub fn parse_amount(node: &Node<'_>) -> Result<Decimal, AmountError> {
    let Node::Num(text) = node else {
        return Err(AmountError::NotANumber);
    };
    if text.contains(['e', 'E']) {
        return Err(AmountError::Exponent);
    }
    if text
        .split_once('.')
        .is_some_and(|(_, fraction)| fraction.len() > 2)
    {
        return Err(AmountError::TooManyFractionDigits);
    }
    Decimal::from_str(text).map_err(|_| AmountError::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text() {
        let n =
            Node::parse(r#"{"a": 0.10, "b": [1e2, "x"], "c": {"d": null}}"#).unwrap_or(Node::Null);
        assert_eq!(n.get("a"), Some(&Node::Num("0.10")));
        let owned = n.to_owned_node();
        let text = serde_json::to_string(&owned).unwrap_or_default();
        assert_eq!(text, r#"{"a":0.10,"b":[1e2,"x"],"c":{"d":null}}"#);
    }

    #[test]
    fn amounts_are_exact() {
        let a = parse_amount(&Node::Num("0.10")).unwrap_or_default();
        let b = parse_amount(&Node::Num("0.20")).unwrap_or_default();
        assert_eq!((a + b).to_string(), "0.30");
        assert_eq!(
            parse_amount(&Node::Num("10.1")),
            parse_amount(&Node::Num("10.10"))
        );
        assert_eq!(
            parse_amount(&Node::Num("1.001")),
            Err(AmountError::TooManyFractionDigits)
        );
        assert_eq!(parse_amount(&Node::Num("1e2")), Err(AmountError::Exponent));
        assert_eq!(
            parse_amount(&Node::Str("1".into())),
            Err(AmountError::NotANumber)
        );
        assert_eq!(
            parse_amount(&Node::Num("10.100")),
            Err(AmountError::TooManyFractionDigits)
        );
        assert_eq!(
            parse_amount(&Node::Num("0.000")),
            Err(AmountError::TooManyFractionDigits)
        );
        assert!(parse_amount(&Node::Num("-42.15")).is_ok());
        assert!(parse_amount(&Node::Num("250")).is_ok());
    }

    #[test]
    fn json_decimal_is_a_number() {
        let s = serde_json::to_string(&JsonDecimal(Decimal::new(-4215, 2))).unwrap_or_default();
        assert_eq!(s, "-42.15");
    }
}
