use super::Invalid;
use std::fmt;

/// Characters that change how surrounding text is displayed without being seen themselves:
/// the bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) that
/// let a string read differently from what it holds ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Invisible characters that make two names look identical while comparing unequal: zero
/// width space, joiners and non-joiners, word joiner, the byte-order mark, the directional
/// marks and the Arabic letter mark, and the soft hyphen.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
    )
}

/// Which characters a kind of text may hold beyond ordinary printable ones.
#[derive(Clone, Copy)]
enum Rule {
    /// One line shown as a label (names, countries, sources): no control characters (C0,
    /// DEL, C1), no bidirectional controls, no invisible characters.
    Line,
    /// Multi-line free text: line breaks and tabs are allowed; other control characters and
    /// bidirectional controls are not. Zero-width joiners stay allowed here, since emoji
    /// sequences and several scripts need them in running text.
    Text,
}

/// What is wrong with a text's characters, the first problem found.
enum Problem {
    Control,
    Bidi,
    Invisible,
}

fn problem(s: &str, rule: Rule) -> Option<Problem> {
    for c in s.chars() {
        let newline = matches!(c, '\n' | '\r' | '\t');
        if c.is_control() && !(matches!(rule, Rule::Text) && newline) {
            return Some(Problem::Control);
        }
        if is_bidi_control(c) {
            return Some(Problem::Bidi);
        }
        if matches!(rule, Rule::Line) && is_invisible(c) {
            return Some(Problem::Invisible);
        }
    }
    None
}

/// The rule values written before the stricter checks obeyed: no control characters except,
/// in multi-line text, line breaks and tabs. Stored history is read back with it.
fn stored_ok(s: &str, rule: Rule) -> bool {
    s.chars()
        .all(|c| !c.is_control() || (matches!(rule, Rule::Text) && matches!(c, '\n' | '\r' | '\t')))
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $rule:expr) => {
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
                match problem(s, $rule) {
                    Some(Problem::Control) => {
                        Err(Invalid(concat!($field, " contains control characters")))
                    }
                    Some(Problem::Bidi) => Err(Invalid(concat!(
                        $field,
                        " contains bidirectional control characters"
                    ))),
                    Some(Problem::Invisible) => {
                        Err(Invalid(concat!($field, " contains invisible characters")))
                    }
                    None => Ok(Self(s.to_owned())),
                }
            }

            /// Rebuilds a value read back from the log. Events recorded before the checks
            /// on bidirectional and invisible characters existed must still decode, so only
            /// the rules that held when they were written are applied here; new input always
            /// goes through [`Self::parse`].
            pub fn from_stored(s: &str) -> Result<Self, Invalid> {
                if s.trim().is_empty() {
                    return Err(Invalid(concat!("stored ", $field, " is empty")));
                }
                if s.chars().count() > $max || !stored_ok(s, $rule) {
                    return Err(Invalid(concat!("stored ", $field, " is not valid")));
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
    /// A person's name: 1 to 200 characters on one line, without control, bidirectional
    /// control or invisible characters.
    PersonName, "name", 200, Rule::Line
);
text_type!(
    /// Free-text notes about a customer: up to 10,000 characters; line breaks and tabs
    /// allowed, other control characters and bidirectional controls not.
    Notes, "notes", 10_000, Rule::Text
);
text_type!(
    /// The country a customer wants to study in (free text as the old system kept it).
    Country, "country", 100, Rule::Line
);
text_type!(
    /// Where a lead came from (website, referral, fair, …).
    Source, "source", 100, Rule::Line
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_trimmed_and_control_characters_refused() {
        assert_eq!(
            PersonName::parse("  Jane Doe ").unwrap().as_str(),
            "Jane Doe"
        );
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("Jane\u{0}Doe").is_err());
        assert!(PersonName::parse("Jane\nDoe").is_err());
        assert!(PersonName::parse("Jane\u{85}Doe").is_err(), "C1 control");
        assert!(PersonName::parse("Jane\u{7f}Doe").is_err(), "DEL");
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
        assert!(PersonName::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn names_with_bidirectional_overrides_or_invisible_characters_are_refused() {
        for bad in [
            "Jane\u{202E}eoD",
            "Jane\u{2066}Doe",
            "Ja\u{200B}ne",
            "Jane\u{200D}Doe",
            "\u{FEFF}Jane",
            "Jane\u{2060}Doe",
            "Jane\u{00AD}Doe",
        ] {
            assert!(PersonName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            PersonName::parse("Jane\u{202E}").unwrap_err(),
            Invalid("name contains bidirectional control characters")
        );
        assert_eq!(
            PersonName::parse("Ja\u{200B}ne").unwrap_err(),
            Invalid("name contains invisible characters")
        );
    }

    #[test]
    fn names_in_other_scripts_are_accepted() {
        for good in ["محمد علي", "Zoë O'Brien-Łukasiewicz", "李小龙", "Ахмед"] {
            assert!(PersonName::parse(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn notes_may_hold_newlines_but_not_other_control_characters() {
        assert!(Notes::parse("line 1\nline 2\r\n\tindented").is_ok());
        assert!(Notes::parse("bell\u{7}").is_err());
        assert!(Notes::parse("escape \u{1b}[31m").is_err());
        assert!(Notes::parse("flip \u{202E}this").is_err());
        assert!(Notes::parse("family 👨\u{200D}👩\u{200D}👧").is_ok());
    }

    #[test]
    fn stored_values_from_before_the_stricter_rules_still_read_back() {
        assert!(PersonName::from_stored("Ja\u{200B}ne").is_ok());
        assert!(PersonName::from_stored("Jane\u{0}").is_err());
        assert!(Notes::from_stored("a\nb").is_ok());
    }

    proptest! {
        #[test]
        fn a_parsed_name_never_holds_control_or_invisible_characters_and_parses_to_itself(
            s in "\\PC{0,40}|[\\x00-\\x20\\u{80}-\\u{a0}\\u{200b}-\\u{200f}\\u{202a}-\\u{202e}a-z]{0,20}"
        ) {
            if let Ok(n) = PersonName::parse(&s) {
                prop_assert!(n.as_str().chars().all(|c| !c.is_control() && !is_bidi_control(c) && !is_invisible(c)));
                prop_assert_eq!(PersonName::parse(n.as_str()), Ok(n.clone()));
                prop_assert_eq!(PersonName::from_stored(n.as_str()), Ok(n.clone()));
            }
        }

        #[test]
        fn a_parsed_note_holds_no_control_characters_but_line_breaks_and_tabs(s in "\\PC{0,40}|[\\x00-\\x20a-z]{0,20}") {
            if let Ok(n) = Notes::parse(&s) {
                prop_assert!(n.as_str().chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')));
                prop_assert_eq!(Notes::parse(n.as_str()), Ok(n.clone()));
            }
        }
    }
}
