use super::Invalid;
use std::fmt;

fn no_controls(s: &str, allow_newlines: bool) -> bool {
    s.chars()
        .all(|c| !c.is_control() || (allow_newlines && (c == '\n' || c == '\t' || c == '\r')))
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $newlines:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(input: &str) -> Result<Self, Invalid> {
                let s = input.trim();
                if s.is_empty() {
                    return Err(Invalid(concat!($field, " is empty")));
                }
                if s.chars().count() > $max {
                    return Err(Invalid(concat!($field, " is too long")));
                }
                if !no_controls(s, $newlines) {
                    return Err(Invalid(concat!($field, " contains control characters")));
                }
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// A person's name: 1 to 200 characters, no control characters.
    PersonName, "name", 200, false
);
text_type!(
    /// Free-text notes about a customer: up to 10,000 characters; newlines allowed.
    Notes, "notes", 10_000, true
);
text_type!(
    /// The country a customer wants to study in (free text as the old system kept it).
    Country, "country", 100, false
);
text_type!(
    /// Where a lead came from (website, referral, fair, …).
    Source, "source", 100, false
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_control_characters_refused() {
        assert_eq!(
            PersonName::parse("  Jane Doe ").unwrap().as_str(),
            "Jane Doe"
        );
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("Jane\u{0}Doe").is_err());
        assert!(PersonName::parse("Jane\nDoe").is_err());
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
        assert!(PersonName::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn notes_may_hold_newlines_but_not_other_control_characters() {
        assert!(Notes::parse("line 1\nline 2").is_ok());
        assert!(Notes::parse("bell\u{7}").is_err());
    }
}
