use super::{Email, Invalid};
use std::collections::HashSet;

/// The shipped list of throw-away email domains (one a line, `#` comments).
const SHIPPED: &str = include_str!("../../data/disposable_email_domains.txt");

/// The message of a refused disposable address (the `fields.email` of a 422).
pub const DISPOSABLE_REFUSED: &str = "disposable email domains are not accepted";

/// Email domains refused for customers because they hand out throw-away inboxes: the shipped
/// list plus whatever the operator adds. A listed domain blocks its subdomains too
/// (`x.mailinator.com`), since those services answer on any of them.
///
/// Pure: the caller reads any extra list (file, environment) and hands the text in.
#[derive(Debug, Clone)]
pub struct DisposableDomains(HashSet<String>);

/// Normalises one list entry: trimmed, lower-cased, without a leading `@` or `.` and a
/// trailing dot; `None` for blank lines and comments.
fn entry(line: &str) -> Option<String> {
    let s = line.trim();
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let s = s
        .trim_start_matches('@')
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!s.is_empty()).then_some(s)
}

impl DisposableDomains {
    /// The shipped list only.
    pub fn shipped() -> Self {
        Self(SHIPPED.lines().filter_map(entry).collect())
    }

    /// No domain is refused (tests and tools that must accept any address).
    pub fn none() -> Self {
        Self(HashSet::new())
    }

    /// Adds the domains of a list in the shipped format (one a line, `#` comments).
    pub fn with_lines(mut self, text: &str) -> Self {
        self.0.extend(text.lines().filter_map(entry));
        self
    }

    /// Adds the domains of a comma-separated list.
    pub fn with_comma_list(mut self, list: &str) -> Self {
        self.0.extend(list.split(',').filter_map(entry));
        self
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the address's domain, or any domain it is a subdomain of, is listed.
    pub fn is_disposable(&self, email: &Email) -> bool {
        let domain = email.domain();
        std::iter::once(domain)
            .chain(domain.match_indices('.').map(|(i, _)| &domain[i + 1..]))
            .any(|suffix| self.0.contains(suffix))
    }

    /// Parses a customer's email and refuses throw-away domains: the one constructor the
    /// customer paths use for input.
    pub fn parse_email(&self, input: &str) -> Result<Email, Invalid> {
        let email = Email::parse(input)?;
        if self.is_disposable(&email) {
            return Err(Invalid(DISPOSABLE_REFUSED));
        }
        Ok(email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_shipped_list_holds_the_well_known_services() {
        let d = DisposableDomains::shipped();
        assert!(d.len() > 300);
        for domain in [
            "mailinator.com",
            "10minutemail.com",
            "guerrillamail.com",
            "yopmail.com",
            "temp-mail.org",
        ] {
            assert!(
                d.parse_email(&format!("x@{domain}")).is_err(),
                "{domain} accepted"
            );
        }
    }

    #[test]
    fn ordinary_domains_pass_and_subdomains_of_listed_domains_are_refused() {
        let d = DisposableDomains::shipped();
        assert!(d.parse_email("jane@example.com").is_ok());
        assert!(d.parse_email("jane@gmail.com").is_ok());
        assert!(d.parse_email("jane@notmailinator.com.example.org").is_ok());
        assert_eq!(
            d.parse_email("jane@inbox.Mailinator.com"),
            Err(Invalid(DISPOSABLE_REFUSED))
        );
        assert_eq!(
            d.parse_email("jane@a.b.yopmail.com"),
            Err(Invalid(DISPOSABLE_REFUSED))
        );
    }

    #[test]
    fn operators_extend_the_list_by_file_text_and_comma_list() {
        let d = DisposableDomains::none()
            .with_lines("# mine\n  Burner.Example \n\n")
            .with_comma_list(" @throwaway.test, .other.test ,,");
        assert_eq!(d.len(), 3);
        assert!(d.parse_email("a@burner.example").is_err());
        assert!(d.parse_email("a@x.throwaway.test").is_err());
        assert!(d.parse_email("a@other.test").is_err());
        assert!(d.parse_email("a@example.com").is_ok());
    }

    #[test]
    fn a_syntax_error_is_reported_before_the_domain_check() {
        let d = DisposableDomains::shipped();
        assert_eq!(
            d.parse_email("not an address"),
            Err(Invalid("email must contain @"))
        );
    }

    proptest! {
        #[test]
        fn every_subdomain_of_a_listed_domain_is_refused(l in "[a-z0-9]{1,10}", sub in "([a-z0-9]{1,8}\\.){0,3}") {
            let d = DisposableDomains::none().with_comma_list("burner.test");
            let addr = format!("{l}@{sub}burner.test");
            prop_assert_eq!(d.parse_email(&addr), Err(Invalid(DISPOSABLE_REFUSED)));
        }

        #[test]
        fn checking_never_panics_and_accepts_what_email_accepts_off_the_list(s in "\\PC{0,60}") {
            let d = DisposableDomains::none().with_comma_list("burner.test");
            if let Ok(e) = Email::parse(&s) {
                let listed = e.domain() == "burner.test" || e.domain().ends_with(".burner.test");
                prop_assert_eq!(d.parse_email(&s).is_ok(), !listed);
            } else {
                prop_assert!(d.parse_email(&s).is_err());
            }
        }
    }
}
