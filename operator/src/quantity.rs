//! Kubernetes quantities (`512Mi`, `1G`, `1.5Gi`, `2e9`) as byte counts.
//!
//! The CRD accepts quantities (the API server checks them with CEL `isQuantity`), while the data plane
//! takes plain byte counts; this converts between the two, rounding a fractional byte up as
//! Kubernetes does.

use thiserror::Error;

/// Why a quantity could not be read as bytes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not of the form `<number><suffix>`.
    #[error("{0:?} is not a Kubernetes quantity such as 512Mi")]
    Malformed(String),
    /// Negative quantities make no sense as sizes.
    #[error("{0:?} is negative")]
    Negative(String),
    /// More bytes than fit in 64 bits.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a quantity into bytes (fractions rounded up).
pub fn to_bytes(s: &str) -> Result<u64, QuantityError> {
    let malformed = || QuantityError::Malformed(s.to_string());
    let text = s.trim();
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let num_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(num_end);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(malformed());
    }
    if frac_part.contains('.') {
        return Err(malformed());
    }
    // value = digits / 10^frac_len * base^exp, kept as an exact fraction num/den.
    let digits = format!("{int_part}{frac_part}");
    let mut num: u128 = if digits.is_empty() {
        0
    } else {
        digits
            .parse()
            .map_err(|_| QuantityError::TooLarge(s.to_string()))?
    };
    let mut den: u128 = 10u128
        .checked_pow(u32::try_from(frac_part.len()).map_err(|_| malformed())?)
        .ok_or_else(|| QuantityError::TooLarge(s.to_string()))?;
    let too_large = || QuantityError::TooLarge(s.to_string());
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| malformed())?;
            let p = 10u128.checked_pow(e.unsigned_abs()).ok_or_else(too_large)?;
            if e >= 0 { (p, 1) } else { (1, p) }
        }
        _ => return Err(malformed()),
    };
    num = num.checked_mul(mul).ok_or_else(too_large)?;
    den = den.checked_mul(div).ok_or_else(too_large)?;
    if negative && num != 0 {
        return Err(QuantityError::Negative(s.to_string()));
    }
    let bytes = num.div_ceil(den);
    u64::try_from(bytes).map_err(|_| too_large())
}

/// An integer in the canonical form the API server stores quantities in (`5000` → `5k`): the
/// largest decimal suffix that keeps it an integer. Rendering canonical values keeps the live
/// object byte-equal to the rendered one.
pub fn canonical_integer(n: i64) -> String {
    const SUFFIXES: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    if n == 0 {
        return "0".into();
    }
    let mut m = n;
    let mut suffix = "";
    for s in SUFFIXES {
        if m % 1000 != 0 {
            break;
        }
        m /= 1000;
        suffix = s;
    }
    format!("{m}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binary_decimal_and_exponent_suffixes() {
        assert_eq!(to_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(to_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(to_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(to_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(to_bytes("2k"), Ok(2_000));
        assert_eq!(to_bytes("2e3"), Ok(2_000));
        assert_eq!(to_bytes("2E3"), Ok(2_000));
        assert_eq!(to_bytes("123"), Ok(123));
        assert_eq!(to_bytes("+7"), Ok(7));
        assert_eq!(to_bytes(".5Ki"), Ok(512));
        assert_eq!(to_bytes("0"), Ok(0));
        assert_eq!(to_bytes("-0"), Ok(0));
    }

    #[test]
    fn fractions_of_a_byte_round_up() {
        assert_eq!(to_bytes("1500m"), Ok(2));
        assert_eq!(to_bytes("1m"), Ok(1));
        assert_eq!(to_bytes("0.1"), Ok(1));
        assert_eq!(to_bytes("15e-1"), Ok(2));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        for bad in ["", "Mi", "1.2.3", "1Xi", "1 Mi", "abc", "1e", "."] {
            assert!(
                matches!(to_bytes(bad), Err(QuantityError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            to_bytes("-1Mi"),
            Err(QuantityError::Negative("-1Mi".into()))
        );
        assert!(matches!(to_bytes("100Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(to_bytes("1e40"), Err(QuantityError::TooLarge(_))));
    }

    #[test]
    fn canonical_integers_use_the_largest_exact_suffix() {
        for (n, s) in [
            (0, "0"),
            (1, "1"),
            (999, "999"),
            (1000, "1k"),
            (1500, "1500"),
            (5000, "5k"),
            (12_000_000, "12M"),
            (3_000_000_000, "3G"),
            (-2000, "-2k"),
        ] {
            assert_eq!(canonical_integer(n), s);
        }
    }

    proptest! {
        #[test]
        fn canonical_integers_parse_back(n in 0i64..4_000_000_000_000) {
            prop_assert_eq!(to_bytes(&canonical_integer(n)), Ok(n as u64));
        }

        #[test]
        fn integers_with_binary_suffix_are_exact(n in 0u64..1_000_000, i in 0usize..5) {
            let (suffix, shift) = [("", 0), ("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)][i];
            prop_assert_eq!(to_bytes(&format!("{n}{suffix}")), Ok(n << shift));
        }

        #[test]
        fn decimal_fractions_round_up(whole in 0u64..1_000_000, frac in 1u64..1000) {
            // whole.frac (3 fraction digits) kilobytes = whole*1000 + frac bytes exactly.
            prop_assert_eq!(to_bytes(&format!("{whole}.{frac:03}k")), Ok(whole * 1000 + frac));
            // Without a suffix the fraction is rounded up to the next byte.
            prop_assert_eq!(to_bytes(&format!("{whole}.{frac:03}")), Ok(whole + 1));
        }

        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = to_bytes(&s);
        }
    }
}
