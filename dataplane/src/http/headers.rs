//! Reading the request headers the API cares about: country, flow id, conditional requests and
//! content coding. Pure functions over `HeaderMap`, tested without a server.

use axum::http::{HeaderMap, HeaderValue};

use super::problem::{Problem, ProblemType};
use crate::model::Country;

/// Header carrying the client's country; the ingress routes on it too.
pub const X_COUNTRY: &str = "x-country";
/// Header carrying the request's flow id, propagated and echoed.
pub const X_FLOW_ID: &str = "x-flow-id";

/// The countries a component serves, with the display form for 421 messages.
#[derive(Debug, Clone)]
pub struct ServedCountries {
    list: Vec<Country>,
    display: String,
}

impl ServedCountries {
    /// Wraps a list of served countries.
    pub fn new(list: Vec<Country>) -> Self {
        let display = list
            .iter()
            .map(Country::as_str)
            .collect::<Vec<_>>()
            .join(",");
        Self { list, display }
    }

    /// The served countries.
    pub fn list(&self) -> &[Country] {
        &self.list
    }

    /// The country of a request to an endpoint that needs one: 400 when missing or malformed,
    /// 421 when this market group does not serve it.
    pub fn require(&self, headers: &HeaderMap) -> Result<Country, Problem> {
        let Some(raw) = headers.get(X_COUNTRY) else {
            return Err(Problem::missing_country());
        };
        let text = raw.to_str().unwrap_or("<not ASCII>").trim();
        let country = Country::parse(text)
            .map_err(|e| Problem::new(ProblemType::InvalidCountry, e.to_string()))?;
        if self.list.contains(&country) {
            Ok(country)
        } else {
            Err(Problem::country_not_served(country.as_str(), &self.display))
        }
    }
}

/// A flow id is echoed only when it is short printable ASCII; anything else is replaced, so a
/// client cannot inject arbitrary bytes into our logs and responses.
pub fn flow_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(X_FLOW_ID).filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    })
}

/// A fresh flow id for requests that came without one: a random per-process prefix and a
/// counter, unique enough to follow a request through logs and cheap on the hot path.
pub fn new_flow_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = [0u8; 32];
    for (i, byte) in prefix
        .to_be_bytes()
        .iter()
        .chain(n.to_be_bytes().iter())
        .enumerate()
    {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    // 32 hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): `gzip` or `*` with q > 0, unless
/// gzip itself is listed with q = 0.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip: Option<bool> = None;
    let mut star = false;
    for value in headers.get_all(axum::http::header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let q = it
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .next()
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
            let Some(q) = q else { continue };
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q > 0.0);
            } else if coding == "*" {
                star = q > 0.0;
            }
        }
    }
    gzip.unwrap_or(star)
}

/// Whether `If-None-Match` matches `etag` by weak comparison (RFC 9110 §13.1.2): `*` or any
/// listed tag equal to ours ignoring the `W/` prefix.
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let ours = etag.strip_prefix("W/").unwrap_or(etag);
    headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .any(|v| {
            v.to_str().is_ok_and(|text| {
                text.split(',')
                    .map(str::trim)
                    .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn country_rules() {
        let served = ServedCountries::new(Country::parse_list("de,at").expect("list"));
        assert_eq!(
            served
                .require(&headers(&[("x-country", "DE")]))
                .map(|c| c.to_string()),
            Ok("de".into())
        );
        let status = |h: HeaderMap| served.require(&h).expect_err("must fail").status;
        assert_eq!(status(headers(&[])), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(headers(&[("x-country", "germany")])),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(headers(&[("x-country", "fr")])),
            StatusCode::MISDIRECTED_REQUEST
        );
        let p = served
            .require(&headers(&[("x-country", "fr")]))
            .expect_err("421");
        assert!(
            p.detail.contains("de,at") && p.detail.contains("fr"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn gzip_negotiation() {
        let gz = |v: &str| accepts_gzip(&headers(&[("accept-encoding", v)]));
        assert!(gz("gzip"));
        assert!(gz("br, gzip;q=0.5"));
        assert!(gz("*"));
        assert!(gz("GZIP"));
        assert!(!gz("gzip;q=0"));
        assert!(!gz("*, gzip;q=0"));
        assert!(!gz("br"));
        assert!(!gz("identity"));
        assert!(!gz("*;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etag_matching() {
        let m = |v: &str, tag: &str| if_none_match(&headers(&[("if-none-match", v)]), tag);
        assert!(m(r#"W/"abc""#, r#"W/"abc""#));
        assert!(m(r#""abc""#, r#"W/"abc""#));
        assert!(m(r#""x", W/"abc""#, r#"W/"abc""#));
        assert!(m("*", r#"W/"abc""#));
        assert!(!m(r#""abcd""#, r#"W/"abc""#));
        assert!(!if_none_match(&HeaderMap::new(), r#"W/"abc""#));
    }

    #[test]
    fn flow_ids() {
        assert_eq!(
            flow_id(&headers(&[("x-flow-id", "abc-123")])).map(|v| v.as_bytes()),
            Some(&b"abc-123"[..])
        );
        assert!(flow_id(&headers(&[("x-flow-id", "has space")])).is_none());
        assert!(flow_id(&headers(&[("x-flow-id", &"x".repeat(129))])).is_none());
        assert_ne!(new_flow_id(), new_flow_id());
        assert_eq!(new_flow_id().len(), 32);
    }
}
