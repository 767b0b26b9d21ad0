//! Vietnamese phone numbers, parsed into the domestic form `0…`.

use std::fmt;

/// A valid Vietnamese mobile or landline number in domestic form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts `(0|+84)[35789]` + 8 digits (mobile) or `(0|+84)2` + 9 digits
    /// (landline), after removing spaces, dots, dashes and parentheses.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
            .collect();
        let national = if let Some(rest) = compact.strip_prefix("+84") {
            rest
        } else if let Some(rest) = compact.strip_prefix('0') {
            rest
        } else {
            return Err("must start with 0 or +84");
        };
        if !national.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "must contain only digits after removing spaces, dots, dashes and parentheses",
            );
        }
        let valid = match national.as_bytes().first() {
            Some(b'3' | b'5' | b'7' | b'8' | b'9') => national.len() == 9,
            Some(b'2') => national.len() == 10,
            _ => false,
        };
        if !valid {
            return Err(
                "is not a Vietnamese mobile (0[35789] + 8 digits) or landline (02 + 9 digits) number",
            );
        }
        Ok(Self(format!("0{national}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contract_forms_are_normalized_to_domestic() {
        for (raw, want) in [
            ("0912345678", "0912345678"),
            ("+84912345678", "0912345678"),
            ("+84 912 345 678", "0912345678"),
            ("0912.345.678", "0912345678"),
            ("(028) 3822-1234", "02838221234"),
            ("02543830123", "02543830123"),
            ("+842543830123", "02543830123"),
        ] {
            assert_eq!(PhoneNumber::parse(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn other_forms_are_refused() {
        for raw in [
            "",
            "912345678",
            "0112345678",
            "091234567",
            "09123456789",
            "0283822123",
            "84912345678",
            "+840912345678",
            "0912_345_678",
            "0912 345 67a",
        ] {
            assert!(PhoneNumber::parse(raw).is_err(), "{raw}");
        }
    }

    fn separator() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", " ", ".", "-", "(", ")"])
    }

    proptest! {
        #[test]
        fn mobiles_with_any_separators_parse(prefix in prop::sample::select(vec!["0", "+84"]),
                                             first in prop::sample::select(vec!['3','5','7','8','9']),
                                             rest in "[0-9]{8}",
                                             seps in prop::collection::vec(separator(), 9)) {
            let mut raw = String::from(prefix);
            raw.push(first);
            for (digit, sep) in rest.chars().zip(&seps) {
                raw.push_str(sep);
                raw.push(digit);
            }
            let phone = PhoneNumber::parse(&raw).unwrap();
            prop_assert_eq!(phone.as_str(), format!("0{first}{rest}"));
            // Parsing is idempotent on the normalized form.
            prop_assert_eq!(PhoneNumber::parse(phone.as_str()).unwrap(), phone);
        }

        #[test]
        fn landlines_parse(prefix in prop::sample::select(vec!["0", "+84"]), rest in "[0-9]{9}") {
            let phone = PhoneNumber::parse(&format!("{prefix}2{rest}")).unwrap();
            prop_assert_eq!(phone.as_str(), format!("02{rest}"));
        }

        #[test]
        fn wrong_lengths_are_refused(first in prop::sample::select(vec!['2','3','5','7','8','9']),
                                     len in 0usize..14) {
            let expected = if first == '2' { 10 } else { 9 };
            prop_assume!(len + 1 != expected);
            let raw = format!("0{first}{}", "1".repeat(len));
            prop_assert!(PhoneNumber::parse(&raw).is_err());
        }
    }
}
