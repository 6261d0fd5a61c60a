//! Which passwords staff may choose.
//!
//! The default follows NIST SP 800-63B and OWASP ASVS 5.0: a minimum length, long passphrases
//! allowed, no composition rules, and refusal of passwords that are common, easy to guess, or
//! built from the user's own details or the product's name. The security review's composition
//! rules are available as a setting for deployments whose compliance rules demand them.

use std::fmt;

/// Shortest password the NIST policy accepts (SP 800-63B asks for at least 8; ASVS 5.0 for
/// at least 12 where it is the only factor).
pub const NIST_MIN_CHARS: usize = 12;
/// Longest password accepted: comfortably above the 64 that NIST asks to allow, and low
/// enough to bound the hashing cost of a hostile request.
pub const MAX_CHARS: usize = 128;
/// Words that make a password guessable for this deployment whoever the user is.
const PRODUCT_WORDS: [&str; 3] = ["egec", "crm", "password"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordPolicy {
    /// NIST SP 800-63B / ASVS 5.0 (the default).
    Nist,
    /// The security review's rules: at least 8 characters with upper and lower case and a
    /// digit.
    Composition,
}

impl std::str::FromStr for PasswordPolicy {
    type Err = crate::values::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nist" => Ok(PasswordPolicy::Nist),
            "composition" => Ok(PasswordPolicy::Composition),
            _ => Err(crate::values::Invalid(
                "password policy must be `nist` or `composition`",
            )),
        }
    }
}

/// What the policy knows of the user, so that their own details are refused as passwords.
#[derive(Debug, Clone, Default)]
pub struct PasswordContext<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Why a password was refused; safe to show the user (it never repeats the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakPassword(pub &'static str);

impl fmt::Display for WeakPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WeakPassword {}

/// The words of the context that must not appear in the password: the email's local part and
/// domain name, the parts of the name, and the product words (three letters or more each).
fn context_words(ctx: &PasswordContext<'_>) -> Vec<String> {
    let mut words: Vec<String> = PRODUCT_WORDS.iter().map(|w| w.to_string()).collect();
    if let Some(email) = ctx.email {
        let lower = email.to_lowercase();
        if let Some((local, domain)) = lower.split_once('@') {
            words.extend(
                local
                    .split(|c: char| !c.is_alphanumeric())
                    .map(str::to_owned),
            );
            if let Some(first) = domain.split('.').next() {
                words.push(first.to_owned());
            }
        }
    }
    if let Some(name) = ctx.name {
        words.extend(
            name.to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_owned),
        );
    }
    words.retain(|w| w.chars().count() >= 3);
    words
}

/// Checks a candidate password against the policy.
pub fn check(
    policy: PasswordPolicy,
    password: &str,
    ctx: &PasswordContext<'_>,
) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars > MAX_CHARS {
        return Err(WeakPassword("password must be at most 128 characters"));
    }
    if password.chars().any(char::is_control) {
        return Err(WeakPassword("password must not contain control characters"));
    }
    match policy {
        PasswordPolicy::Composition => {
            if chars < 8 {
                return Err(WeakPassword("password must be at least 8 characters long"));
            }
            if !(password.chars().any(char::is_uppercase)
                && password.chars().any(char::is_lowercase))
            {
                return Err(WeakPassword(
                    "password must contain both uppercase and lowercase letters",
                ));
            }
            if !password.chars().any(|c| c.is_ascii_digit()) {
                return Err(WeakPassword("password must contain at least one number"));
            }
        }
        PasswordPolicy::Nist => {
            if chars < NIST_MIN_CHARS {
                return Err(WeakPassword("password must be at least 12 characters long"));
            }
        }
    }
    let lower = password.to_lowercase();
    if context_words(ctx)
        .iter()
        .any(|w| lower.contains(w.as_str()))
    {
        return Err(WeakPassword(
            "password must not contain your name, your email or the product's name",
        ));
    }
    if policy == PasswordPolicy::Nist {
        let inputs: Vec<&str> = [ctx.email, ctx.name].into_iter().flatten().collect();
        let estimate = zxcvbn::zxcvbn(password, &inputs);
        // Score 3 is "safely unguessable: moderate protection from offline slow-hash
        // scenario" in zxcvbn's scale; below it the password is in or near common lists.
        if u8::from(estimate.score()) < 3 {
            return Err(WeakPassword("password is too common or too easy to guess"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> PasswordContext<'static> {
        PasswordContext {
            email: Some("jane.doe@example.com"),
            name: Some("Jane Doe"),
        }
    }

    #[test]
    fn a_long_uncommon_passphrase_passes_the_nist_policy() {
        assert_eq!(
            check(
                PasswordPolicy::Nist,
                "violet tractor harbour 1987 spoon",
                &ctx()
            ),
            Ok(())
        );
        let long = "violet tractor harbour 1987 spoon, quietly folding maps at noon!";
        assert_eq!(long.chars().count(), 64);
        assert_eq!(
            check(PasswordPolicy::Nist, long, &ctx()),
            Ok(()),
            "64 characters allowed"
        );
    }

    #[test]
    fn short_common_and_predictable_passwords_are_refused_by_nist() {
        for weak in [
            "Tr0ub4dor&3",
            "passwordpassword",
            "123456789012",
            "qwertyuiopasdf",
            "aaaaaaaaaaaaaaaa",
        ] {
            assert!(
                check(PasswordPolicy::Nist, weak, &ctx()).is_err(),
                "{weak} accepted"
            );
        }
    }

    #[test]
    fn the_users_own_details_and_the_product_name_are_refused() {
        for weak in [
            "janeharbourviolet77",
            "harbour-doe-violet-42",
            "my egec harbour violet",
            "violet CRM harbour tractor",
            "examplevioletharbour",
        ] {
            assert_eq!(
                check(PasswordPolicy::Nist, weak, &ctx()),
                Err(WeakPassword(
                    "password must not contain your name, your email or the product's name"
                )),
                "{weak}"
            );
        }
    }

    #[test]
    fn composition_needs_length_case_and_a_digit_but_not_twelve_characters() {
        assert_eq!(
            check(PasswordPolicy::Composition, "Harbour7x", &ctx()),
            Ok(())
        );
        assert!(check(PasswordPolicy::Composition, "Hb7x", &ctx()).is_err());
        assert!(check(PasswordPolicy::Composition, "harbour7x", &ctx()).is_err());
        assert!(check(PasswordPolicy::Composition, "Harbourxx", &ctx()).is_err());
    }

    #[test]
    fn overlong_passwords_and_control_characters_are_refused() {
        assert!(check(PasswordPolicy::Nist, &"violet tractor ".repeat(10), &ctx()).is_err());
        assert!(check(PasswordPolicy::Nist, "violet\u{0}tractor harbour", &ctx()).is_err());
    }

    proptest! {
        #[test]
        fn no_password_shorter_than_the_minimum_ever_passes_nist(p in "\\PC{0,11}") {
            prop_assert!(check(PasswordPolicy::Nist, &p, &PasswordContext::default()).is_err());
        }
    }
}
