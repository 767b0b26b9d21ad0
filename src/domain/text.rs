//! Text rules of the contract: NFC, lengths in characters.

use unicode_normalization::UnicodeNormalization;

/// NFC-normalizes and trims surrounding white space.
pub fn normalize(raw: &str) -> String {
    raw.trim().nfc().collect()
}

/// Length in Unicode scalar values, as the contract counts.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// True when every character is printable (no control characters).
pub fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposed_vietnamese_is_composed() {
        let nfd = "Nguye\u{0302}\u{0303}n";
        assert_eq!(normalize(nfd), "Nguyễn");
        assert_eq!(char_len(&normalize(nfd)), 6);
    }
}
