//! `Accept` negotiation between the four media types (RFC 9110 §12.5.1), allocation-free since it
//! runs on every request, cache hits included.
//!
//! Rules:
//! - no header, an empty one, or one without a single well-formed media range → `application/json`;
//! - each type's weight comes from the most specific range that matches it (`type/subtype` over
//!   `type/*` over `*/*`), so `application/json;q=0, */*` excludes JSON only; equally specific
//!   ranges for one type take the highest weight;
//! - `q=0` excludes; the highest weight wins; ties go to the range that appears first, and a
//!   wildcard that matches several types at once picks them in server preference order
//!   ([`MediaType::ALL`]: json, alpha, beta, gamma), which is how `*/*` and `application/*` mean JSON;
//! - parameters other than `q` are tolerated and ignored; a part with a malformed range or `q`
//!   is ignored; commas and semicolons inside quoted strings do not split;
//! - nothing acceptable → [`NotAcceptable`] (the HTTP layer answers 406 listing the supported types).

use super::MediaType;

/// No supported media type is acceptable to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "none of the acceptable media types is supported; supported: application/json, \
     application/x.alpha-format+json, application/x.beta-format+json, application/x.gamma-format+json"
)]
pub struct NotAcceptable;

impl NotAcceptable {
    /// The `Content-Type` values the server can produce, for the 406 body.
    pub fn supported(&self) -> [&'static str; 4] {
        MediaType::ALL.map(MediaType::content_type)
    }
}

/// Weights in thousandths, as RFC 9110 allows at most three decimals: no floats to compare.
type Weight = u16;
const MAX_WEIGHT: Weight = 1000;

/// How a media range matched a type: its specificity (0 `*/*`, 1 `type/*`, 2 exact), weight and
/// position in the header.
#[derive(Debug, Clone, Copy)]
struct Match {
    specificity: u8,
    weight: Weight,
    position: usize,
}

impl MediaType {
    /// Accept-header negotiation with q-values (RFC 9110 §12.5.1): None, empty or `*/*` (and
    /// `application/*`) → Json; highest q wins, ties by order of appearance, then server
    /// preference; q=0 excludes; parameters tolerated; malformed parts ignored; nothing acceptable
    /// → `Err(NotAcceptable)`.
    pub fn negotiate(accept: Option<&str>) -> Result<MediaType, NotAcceptable> {
        Self::negotiate_among(accept, &MediaType::ALL)
    }

    /// [`MediaType::negotiate`] restricted to the types an endpoint offers (`/products/{id}` offers
    /// only JSON): `application/x.alpha-format+json, application/json;q=0.1` gives JSON there,
    /// not 406. Without a usable `Accept`, the first offered type in server preference wins.
    pub fn negotiate_among(
        accept: Option<&str>,
        offered: &[MediaType],
    ) -> Result<MediaType, NotAcceptable> {
        let default = MediaType::ALL
            .into_iter()
            .find(|m| offered.contains(m))
            .ok_or(NotAcceptable)?;
        let Some(accept) = accept else {
            return Ok(default);
        };
        let mut decided: [Option<Match>; 4] = [None; 4];
        let mut any_range = false;
        for (position, part) in split_unquoted(accept, b',').enumerate() {
            let Some(range) = MediaRange::parse(part) else {
                continue;
            };
            any_range = true;
            for (slot, media) in decided.iter_mut().zip(MediaType::ALL) {
                let Some(specificity) = range.specificity_for(media) else {
                    continue;
                };
                let candidate = Match {
                    specificity,
                    weight: range.weight,
                    position,
                };
                *slot = match *slot {
                    Some(current)
                        if (current.specificity, current.weight)
                            >= (candidate.specificity, candidate.weight) =>
                    {
                        Some(current)
                    }
                    _ => Some(candidate),
                };
            }
        }
        if !any_range {
            return Ok(default);
        }
        let mut winner: Option<(MediaType, Match)> = None;
        for (slot, media) in decided.into_iter().zip(MediaType::ALL) {
            if !offered.contains(&media) {
                continue;
            }
            let Some(m) = slot.filter(|m| m.weight > 0) else {
                continue;
            };
            // Strictly better only, so equal (weight, position) keeps the earlier type in ALL.
            let better = match winner {
                None => true,
                Some((_, w)) => {
                    (m.weight, std::cmp::Reverse(m.position))
                        > (w.weight, std::cmp::Reverse(w.position))
                }
            };
            if better {
                winner = Some((media, m));
            }
        }
        winner.map(|(media, _)| media).ok_or(NotAcceptable)
    }
}

/// One well-formed element of an `Accept` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MediaRange<'a> {
    /// `None` for `*`.
    kind: Option<&'a str>,
    /// `None` for `*`.
    subtype: Option<&'a str>,
    weight: Weight,
}

impl<'a> MediaRange<'a> {
    fn parse(part: &'a str) -> Option<Self> {
        let mut pieces = split_unquoted(part, b';');
        let range = trim_ows(pieces.next()?);
        let (kind, subtype) = range.split_once('/')?;
        if !is_token(kind) || !is_token(subtype) {
            return None;
        }
        let (kind, subtype) = match (kind, subtype) {
            ("*", "*") => (None, None),
            ("*", _) => return None,
            (k, "*") => (Some(k), None),
            (k, s) => (Some(k), Some(s)),
        };
        let mut weight = None;
        for param in pieces {
            let param = trim_ows(param);
            let Some((name, value)) = param.split_once('=') else {
                continue; // a stray `;` or a bare name: tolerated
            };
            if trim_ows(name).eq_ignore_ascii_case("q") && weight.is_none() {
                weight = Some(parse_weight(trim_ows(value))?);
            }
        }
        Some(Self {
            kind,
            subtype,
            weight: weight.unwrap_or(MAX_WEIGHT),
        })
    }

    /// How specifically this range names `media`, or `None` when it does not match it.
    fn specificity_for(&self, media: MediaType) -> Option<u8> {
        let (kind, subtype) = media.content_type().split_once('/')?;
        match (self.kind, self.subtype) {
            (None, _) => Some(0),
            (Some(k), None) => k.eq_ignore_ascii_case(kind).then_some(1),
            (Some(k), Some(s)) => {
                (k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype)).then_some(2)
            }
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_weight(value: &str) -> Option<Weight> {
    let (int, frac) = match value.split_once('.') {
        Some((i, f)) => (i, f),
        None => (value, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: Weight = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += Weight::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(MAX_WEIGHT),
        _ => None,
    }
}

/// RFC 9110 `token`: one or more tchars.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Splits at `sep` outside double-quoted strings (with backslash escapes inside them). Slices only.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut quoted = false;
        let mut escaped = false;
        let from = start;
        for (i, &b) in bytes.iter().enumerate().skip(from) {
            if quoted {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    quoted = false;
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == sep {
                // `sep` is ASCII, so `i` and `i + 1` are char boundaries.
                let piece = &s[from..i];
                start = i + 1;
                return Some(piece);
            }
        }
        done = true;
        Some(&s[from..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use MediaType::{Alpha, Beta, Gamma, Json};

    fn neg(accept: &str) -> Result<MediaType, NotAcceptable> {
        MediaType::negotiate(Some(accept))
    }

    const A: &str = "application/x.alpha-format+json";
    const B: &str = "application/x.beta-format+json";
    const G: &str = "application/x.gamma-format+json";

    #[test]
    fn defaults_to_json() {
        assert_eq!(MediaType::negotiate(None), Ok(Json));
        assert_eq!(neg(""), Ok(Json));
        assert_eq!(neg("  ,  ,"), Ok(Json));
        assert_eq!(neg("*/*"), Ok(Json));
        assert_eq!(neg("application/*"), Ok(Json));
        assert_eq!(neg("application/json"), Ok(Json));
        // Nothing well-formed is treated like no header at all.
        assert_eq!(neg("garbage"), Ok(Json));
        assert_eq!(neg("application/json;q=2"), Ok(Json));
    }

    #[test]
    fn exact_types() {
        assert_eq!(neg(A), Ok(Alpha));
        assert_eq!(neg(B), Ok(Beta));
        assert_eq!(neg(G), Ok(Gamma));
        assert_eq!(neg("APPLICATION/X.Gamma-Format+JSON"), Ok(Gamma));
        for m in MediaType::ALL {
            assert_eq!(neg(m.content_type()), Ok(m));
        }
    }

    #[test]
    fn highest_q_wins() {
        assert_eq!(neg(&format!("{A};q=0.5, {G};q=0.9, {B};q=0.1")), Ok(Gamma));
        assert_eq!(neg(&format!("application/json;q=0.3, {B}")), Ok(Beta));
        assert_eq!(
            neg(&format!("{A};q=0.001, application/json;q=0")),
            Ok(Alpha)
        );
        assert_eq!(neg("text/html, */*;q=0.8"), Ok(Json));
        assert_eq!(neg(&format!("text/html, {G};q=0.8, */*;q=0.1")), Ok(Gamma));
        assert_eq!(neg(&format!("{A};q=1.000, {B};q=0.999")), Ok(Alpha));
        assert_eq!(neg(&format!("{A};q=0.99, {B};q=0.999")), Ok(Beta));
    }

    #[test]
    fn ties_go_to_the_first_range_then_server_preference() {
        assert_eq!(neg(&format!("{G}, {A}")), Ok(Gamma));
        assert_eq!(neg(&format!("{A};q=0.5, {G};q=0.5")), Ok(Alpha));
        assert_eq!(neg(&format!("{B}, application/json")), Ok(Beta));
        // The wildcard comes first, so at equal weight it (and with it JSON) wins.
        assert_eq!(neg(&format!("*/*, {G}")), Ok(Json));
        assert_eq!(neg(&format!("{G}, */*")), Ok(Gamma));
        // One wildcard matching the three legacy types: server preference picks alpha.
        assert_eq!(neg("application/json;q=0, application/*"), Ok(Alpha));
    }

    #[test]
    fn most_specific_range_decides_a_types_weight() {
        // gamma is weighed by its own range (0.1), not by */* (1).
        assert_eq!(neg(&format!("{G};q=0.1, */*;q=0.5")), Ok(Json));
        assert_eq!(neg(&format!("*/*;q=0.5, {G};q=0.9")), Ok(Gamma));
        assert_eq!(neg("application/*;q=0.2, */*;q=0.9"), Ok(Json));
        assert_eq!(neg(&format!("application/*;q=0, {B}")), Ok(Beta));
        assert_eq!(neg(&format!("*/*;q=0, {B};q=0.01")), Ok(Beta));
        // Equally specific ranges for one type: the higher weight counts.
        assert_eq!(
            neg(&format!("{A};q=0, {A};q=0.4, application/json;q=0.3")),
            Ok(Alpha)
        );
    }

    #[test]
    fn q_zero_excludes() {
        assert_eq!(neg("application/json;q=0"), Err(NotAcceptable));
        assert_eq!(neg("*/*;q=0"), Err(NotAcceptable));
        assert_eq!(neg("application/*;q=0.000"), Err(NotAcceptable));
        assert_eq!(neg("application/json;q=0, */*"), Ok(Alpha));
        assert_eq!(
            neg(&format!(
                "application/json;q=0, {A};q=0, {B};q=0, {G};q=0, */*"
            )),
            Err(NotAcceptable)
        );
        assert_eq!(neg(&format!("{G};q=0, */*;q=0.1")), Ok(Json));
    }

    #[test]
    fn not_acceptable_lists_what_is_supported() {
        assert_eq!(neg("text/html"), Err(NotAcceptable));
        assert_eq!(neg("text/*, image/png;q=0.9"), Err(NotAcceptable));
        assert_eq!(neg("application/xml"), Err(NotAcceptable));
        assert_eq!(neg("application/problem+json"), Err(NotAcceptable));
        let msg = NotAcceptable.to_string();
        for ct in NotAcceptable.supported() {
            assert!(msg.contains(ct), "{msg} lacks {ct}");
        }
        assert_eq!(NotAcceptable.supported()[0], "application/json");
    }

    #[test]
    fn parameters_are_tolerated() {
        assert_eq!(neg("application/json; charset=utf-8"), Ok(Json));
        assert_eq!(neg(&format!("{A};version=2;q=0.5, {B};q=0.4")), Ok(Alpha));
        assert_eq!(neg(&format!("{A} ; Q=0.2 , {B} ;\tq=0.3")), Ok(Beta));
        assert_eq!(neg(&format!("{A};q=0.9;ext=1, {B};q=0.3")), Ok(Alpha));
        assert_eq!(neg(&format!("{A};flag;q=0.2, {B};q=0.1")), Ok(Alpha));
        // Quoted strings may hold the separators.
        assert_eq!(
            neg(&format!(r#"{A};note="a,b;q=0";q=0.7, {B};q=0.6"#)),
            Ok(Alpha)
        );
        assert_eq!(
            neg(&format!(r#"{A};note="say \"hi\", q=0";q=0.2, {B};q=0.6"#)),
            Ok(Beta)
        );
    }

    #[test]
    fn malformed_parts_are_ignored() {
        // Bad q values, missing subtypes, `*/subtype`, non-token characters: the part is skipped.
        assert_eq!(neg(&format!("{G};q=abc, {B};q=0.1")), Ok(Beta));
        assert_eq!(neg(&format!("{G};q=1.5, {B};q=0.1")), Ok(Beta));
        assert_eq!(neg(&format!("{G};q=0.1234, {B};q=0.1")), Ok(Beta));
        assert_eq!(neg(&format!("{G};q=-0.5, {B};q=0.1")), Ok(Beta));
        assert_eq!(neg(&format!("{G};q=, {B};q=0.1")), Ok(Beta));
        assert_eq!(neg(&format!("application, {B}")), Ok(Beta));
        assert_eq!(neg(&format!("*/json, {B}")), Ok(Beta));
        assert_eq!(neg(&format!("application/js on, {B}")), Ok(Beta));
        assert_eq!(neg(&format!("/, {B}")), Ok(Beta));
        assert_eq!(neg(&format!("application/json/x, {B}")), Ok(Beta));
        assert_eq!(neg(&format!("{G}\"unterminated, {B}")), Ok(Json));
        // Only malformed parts and q=0: nothing acceptable.
        assert_eq!(
            neg("application/json;q=0, text/html;q=x"),
            Err(NotAcceptable)
        );
    }

    #[test]
    fn weights_parse_per_rfc_grammar() {
        for (text, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.005", Some(5)),
            ("0.999", Some(999)),
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.0000", None),
            (".5", None),
            ("2", None),
            ("", None),
            ("0.x", None),
            ("01", None),
            ("0.٣", None),
        ] {
            assert_eq!(parse_weight(text), want, "{text:?}");
        }
    }

    #[test]
    fn split_respects_quotes() {
        let parts: Vec<&str> = split_unquoted(r#"a,"b,c",d\,e,"f\",g",h"#, b',').collect();
        assert_eq!(parts, ["a", r#""b,c""#, r#"d\"#, "e", r#""f\",g""#, "h"]);
        assert_eq!(split_unquoted("", b',').collect::<Vec<_>>(), [""]);
        assert_eq!(split_unquoted(",", b',').collect::<Vec<_>>(), ["", ""]);
    }

    fn header_fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("application/json".to_owned()),
            Just(A.to_owned()),
            Just(G.to_owned()),
            Just("*/*".to_owned()),
            Just("application/*".to_owned()),
            Just(";q=".to_owned()),
            Just(",".to_owned()),
            Just(";".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            "[0-9.]{0,6}",
            "[ -~]{0,8}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = MediaType::negotiate(Some(&s));
        }

        #[test]
        fn never_panics_on_header_like_strings(parts in prop::collection::vec(header_fragment(), 0..12)) {
            let s = parts.concat();
            let _ = MediaType::negotiate(Some(&s));
        }

        /// With each supported type listed once with its own weight, the result is the heaviest,
        /// the first listed among equals, and 406 when every weight is 0.
        #[test]
        fn picks_the_heaviest_listed_type(
            listed in Just(MediaType::ALL.to_vec()).prop_shuffle(),
            count in 1usize..=4,
            weights in prop::collection::vec(0u16..=1000, 4),
            padding in "[ \t]{0,2}",
        ) {
            let listed = &listed[..count];
            let header = listed
                .iter()
                .zip(&weights)
                .map(|(m, w)| format!("{}{padding};{padding}q={}.{:03}", m.content_type(), w / 1000, w % 1000))
                .collect::<Vec<_>>()
                .join(&format!("{padding},{padding}"));
            let mut best: Option<(MediaType, u16)> = None;
            for (m, w) in listed.iter().zip(&weights) {
                if *w > 0 && best.is_none_or(|(_, bw)| *w > bw) {
                    best = Some((*m, *w));
                }
            }
            prop_assert_eq!(neg(&header), best.map(|(m, _)| m).ok_or(NotAcceptable), "{}", header);
        }

        /// Adding unrelated types never changes the answer.
        #[test]
        fn unrelated_types_do_not_matter(
            media in prop::sample::select(MediaType::ALL.to_vec()),
            other in "(text|image|audio)/[a-z]{1,8}(;q=0\\.[0-9])?",
        ) {
            prop_assert_eq!(neg(&format!("{other}, {}", media.content_type())), Ok(media));
            prop_assert_eq!(neg(&format!("{}, {other}", media.content_type())), Ok(media));
        }
    }

    #[test]
    fn negotiation_among_offered_types() {
        let json_only = &[MediaType::Json];
        let among = |a: Option<&str>| MediaType::negotiate_among(a, json_only);
        assert_eq!(among(None), Ok(MediaType::Json));
        assert_eq!(
            among(Some(
                "application/x.alpha-format+json, application/json;q=0.1"
            )),
            Ok(MediaType::Json)
        );
        assert_eq!(
            among(Some("application/x.alpha-format+json")),
            Err(NotAcceptable)
        );
        assert_eq!(among(Some("*/*")), Ok(MediaType::Json));
        assert_eq!(among(Some("application/json;q=0, */*")), Err(NotAcceptable));
        assert_eq!(MediaType::negotiate_among(None, &[]), Err(NotAcceptable));
        let legacy = &[MediaType::Beta, MediaType::Gamma];
        assert_eq!(
            MediaType::negotiate_among(Some("*/*"), legacy),
            Ok(MediaType::Beta)
        );
    }
}
