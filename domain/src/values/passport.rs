use super::Invalid;
use std::fmt;

/// A passport number: 6 to 12 letters and digits (the ICAO 9303 document number field is at
/// most 9 characters; some national formats run longer), upper-cased, spaces removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PassportNumber(String);

impl PassportNumber {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if !(6..=12).contains(&s.len()) {
            return Err(Invalid(
                "passport number must be 6 to 12 letters and digits",
            ));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Invalid("passport number may hold only letters and digits"));
        }
        if !s.chars().any(|c| c.is_ascii_digit()) {
            return Err(Invalid("passport number must contain a digit"));
        }
        Ok(PassportNumber(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PassportNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PassportNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn passport_numbers_are_normalised_and_checked() {
        assert_eq!(
            PassportNumber::parse("ab 123 4567").unwrap().as_str(),
            "AB1234567"
        );
        for bad in ["", "AB12", "ABCDEFGH", "AB-123456", "A1234567890123"] {
            assert!(PassportNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn a_parsed_passport_number_parses_to_itself(s in "\\PC{0,20}|[a-zA-Z0-9 -]{0,16}") {
            if let Ok(p) = PassportNumber::parse(&s) {
                prop_assert_eq!(PassportNumber::parse(p.as_str()), Ok(p.clone()));
            }
        }

        #[test]
        fn a_parsed_passport_number_is_6_to_12_upper_case_letters_and_digits(s in "\\PC{0,20}|[a-zA-Z0-9 ]{0,16}") {
            if let Ok(p) = PassportNumber::parse(&s) {
                let v = p.as_str();
                prop_assert!((6..=12).contains(&v.len()));
                prop_assert!(v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
                prop_assert!(v.bytes().any(|b| b.is_ascii_digit()));
            }
        }
    }
}
