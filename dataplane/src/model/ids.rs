//! Identifiers shared by events, the HTTP API and the stores (docs/events.md).

use prapi_common::countries::ISO_3166_ALPHA2;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValidationError;

/// Longest product or merchant id accepted.
pub const MAX_ID_LEN: usize = 64;
/// Longest SKU accepted (not fixed by the contract; generous but bounded so keys stay small).
pub const MAX_SKU_LEN: usize = 128;

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// Validates `s` as an id: 1–64 characters of `[A-Za-z0-9._-]`.
            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                if valid_id(s) {
                    Ok(Self(s.into()))
                } else {
                    Err(Self::invalid(s))
                }
            }

            /// Like [`Self::parse`], keeping `s`'s buffer: no copy when its capacity is its
            /// length, as for a string just decoded from a request path.
            pub fn parse_owned(s: String) -> Result<Self, ValidationError> {
                if valid_id(&s) {
                    Ok(Self(s.into_boxed_str()))
                } else {
                    Err(Self::invalid(&s))
                }
            }

            fn invalid(s: &str) -> ValidationError {
                ValidationError::new(
                    $what,
                    format!("{:?} is not 1-64 characters of [A-Za-z0-9._-]", truncate(s)),
                )
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A product id (also the Kafka key and the DynamoDB partition key).
    ProductId,
    "product id"
);
id_type!(
    /// A merchant id.
    MerchantId,
    "merchant id"
);

/// Cuts long input for error messages (80 characters) so hostile input cannot blow up logs or
/// be echoed back whole.
pub fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An ISO 3166-1 alpha-2 country code, stored lower-case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Parses an ISO 3166-1 alpha-2 code, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            let lower = [b[0].to_ascii_lowercase(), b[1].to_ascii_lowercase()];
            let code = std::str::from_utf8(&lower).unwrap_or_default();
            if ISO_3166_ALPHA2.binary_search(&code).is_ok() {
                return Ok(Self(lower));
            }
        }
        Err(ValidationError::new(
            "country",
            format!(
                "{:?} is not an ISO 3166-1 alpha-2 country code",
                truncate(s)
            ),
        ))
    }

    /// Parses a comma-separated list such as `de,at` (the `--countries` flag), rejecting duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, ValidationError> {
        let mut out: Vec<Country> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let c = Self::parse(part)?;
            if out.contains(&c) {
                return Err(ValidationError::new(
                    "countries",
                    format!("{c} is listed twice"),
                ));
            }
            out.push(c);
        }
        if out.is_empty() {
            return Err(ValidationError::new("countries", "the list is empty"));
        }
        Ok(out)
    }

    /// The lower-case code.
    pub fn as_str(&self) -> &str {
        // Always two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

impl FromStr for Country {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["P1", "a", "A.b_c-9", &"x".repeat(64)] {
            assert_eq!(
                ProductId::parse(ok).map(|p| p.to_string()).ok().as_deref(),
                Some(ok)
            );
            assert_eq!(ProductId::parse_owned(ok.to_string()), ProductId::parse(ok));
        }
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65), "a,b"] {
            let err = ProductId::parse(bad).expect_err(bad);
            assert_eq!(err.field, "product id");
            assert_eq!(ProductId::parse_owned(bad.to_string()), Err(err));
        }
        // The buffer of an exactly sized string is kept, not copied.
        let s = String::from("P-123");
        let at = s.as_ptr();
        let id = ProductId::parse_owned(s).expect("valid");
        assert_eq!(id.as_str().as_ptr(), at);
        assert!(MerchantId::parse("m1").is_ok());
    }

    #[test]
    fn countries() {
        assert_eq!(
            Country::parse("DE").map(|c| c.to_string()).ok().as_deref(),
            Some("de")
        );
        assert_eq!(
            Country::parse("At").map(|c| c.to_string()).ok().as_deref(),
            Some("at")
        );
        for bad in ["", "d", "deu", "xx", "1a", "ÄÖ"] {
            assert!(Country::parse(bad).is_err(), "{bad}");
        }
        let list = Country::parse_list("de, AT,ch").expect("valid list");
        assert_eq!(
            list.iter().map(Country::as_str).collect::<Vec<_>>(),
            ["de", "at", "ch"]
        );
        assert!(Country::parse_list("de,DE").is_err());
        assert!(Country::parse_list(" , ").is_err());
    }
}
