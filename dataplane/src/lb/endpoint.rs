//! Endpoints as Skipper writes them: `http://<ip>:<port>`.
//!
//! The ring hashes the endpoint *string*, so two spellings of one address (`http://a:80/` and
//! `http://a:80`) would place keys differently from the ingress. Only the canonical form is
//! accepted; anything else is an error rather than a silent cache split.

use std::fmt;
use std::sync::Arc;

/// An endpoint that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: {reason} (expected http://<ip>:<port>, as Skipper writes it)")]
pub struct EndpointError {
    /// The input, shortened for messages.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A products pod address in Skipper's string form, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint(Arc<str>);

impl Endpoint {
    /// Parses `scheme://host:port` with scheme `http` or `https`, an explicit port, and nothing
    /// after it (no path, not even `/`).
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let err = |reason| EndpointError {
            input: s.chars().take(120).collect(),
            reason,
        };
        let uri: http::Uri = s.parse().map_err(|_| err("not a URI"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(_) => return Err(err("scheme must be http or https")),
            None => return Err(err("missing scheme")),
        }
        let authority = uri.authority().ok_or_else(|| err("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user info is not allowed"));
        }
        if authority.host().is_empty() {
            return Err(err("missing host"));
        }
        if authority.port_u16().is_none() {
            return Err(err("missing port"));
        }
        let canonical_len = uri.scheme_str().map_or(0, str::len) + 3 + authority.as_str().len();
        if s.len() != canonical_len {
            return Err(err("nothing may follow the port"));
        }
        Ok(Self(s.into()))
    }

    /// The endpoint string, exactly as hashed onto the ring.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `host:port`, for connecting.
    pub fn authority(&self) -> &str {
        self.0.split_once("://").map_or(&self.0, |(_, a)| a)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Parses a list of endpoints (surrounding whitespace ignored), sorted and without duplicates.
///
/// Order and duplicates do not change placement (a duplicate hashes to the very same positions),
/// so normalising here only makes snapshots comparable.
pub fn parse_endpoints<S: AsRef<str>>(list: &[S]) -> Result<Vec<Endpoint>, EndpointError> {
    let mut out = list
        .iter()
        .map(|s| Endpoint::parse(s.as_ref().trim()))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_skipper_forms() {
        for s in [
            "http://10.2.3.4:8080",
            "https://10.2.3.4:443",
            "http://[fd00::a]:8080",
            "http://products.default.svc:80",
        ] {
            let e = Endpoint::parse(s).expect("valid endpoint");
            assert_eq!(e.as_str(), s);
        }
        assert_eq!(
            Endpoint::parse("http://[fd00::a]:8080")
                .expect("valid")
                .authority(),
            "[fd00::a]:8080"
        );
    }

    #[test]
    fn rejects_other_spellings() {
        for (s, why) in [
            ("10.2.3.4:8080", "missing scheme"),
            ("http://10.2.3.4", "missing port"),
            ("http://10.2.3.4:8080/", "nothing may follow the port"),
            ("http://10.2.3.4:8080/x", "nothing may follow the port"),
            ("http://10.2.3.4:8080?a=b", "nothing may follow the port"),
            ("ftp://10.2.3.4:21", "scheme must be http or https"),
            ("http://u@10.2.3.4:80", "user info is not allowed"),
            ("", "not a URI"),
            ("http://:80", "missing host"),
        ] {
            let e = Endpoint::parse(s).expect_err(s);
            assert_eq!(e.reason, why, "{s}");
            assert!(e.to_string().contains("http://<ip>:<port>"));
        }
    }

    #[test]
    fn list_is_sorted_and_deduplicated() {
        let eps = parse_endpoints(&[" http://b:1", "http://a:1", "http://b:1"]).expect("valid");
        let s: Vec<_> = eps.iter().map(Endpoint::as_str).collect();
        assert_eq!(s, ["http://a:1", "http://b:1"]);
        assert!(parse_endpoints(&["http://a:1", "nope"]).is_err());
    }
}
