use super::Invalid;
use std::fmt;

/// An email address, trimmed and lower-cased so that lookups and duplicates compare equal.
///
/// The syntax check is deliberately the practical subset (one `@`, a non-empty local part, a
/// dotted domain of letters, digits and hyphens) rather than full RFC 5322, which accepts
/// addresses no mail system delivers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim().to_lowercase();
        if s.is_empty() {
            return Err(Invalid("email is empty"));
        }
        if s.len() > 254 {
            return Err(Invalid("email is longer than 254 characters"));
        }
        let (local, domain) = s.split_once('@').ok_or(Invalid("email must contain @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(Invalid("email local part must be 1 to 64 characters"));
        }
        if domain.contains('@') {
            return Err(Invalid("email must contain exactly one @"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(Invalid(
                "email local part has characters that are not allowed",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && !tld.chars().all(|c| c.is_ascii_digit()));
        if !domain_ok {
            return Err(Invalid("email domain is not valid"));
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_are_normalised_to_lower_case_without_surrounding_space() {
        assert_eq!(
            Email::parse("  Jane.Doe@Example.COM ").unwrap().as_str(),
            "jane.doe@example.com"
        );
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "a",
            "a@",
            "@b.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            "a..b@c.com",
            "a@b.c0m.123",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_a_parsed_address_parses_to_itself(s in "\\PC{0,80}") {
            if let Ok(e) = Email::parse(&s) {
                prop_assert_eq!(Email::parse(e.as_str()), Ok(e.clone()));
            }
        }

        #[test]
        fn simple_well_formed_addresses_are_accepted(l in "[a-z0-9]{1,20}", d in "[a-z0-9]{1,20}", t in "[a-z]{2,6}") {
            let s = format!("{l}@{d}.{t}");
            prop_assert!(Email::parse(&s).is_ok());
        }
    }
}
