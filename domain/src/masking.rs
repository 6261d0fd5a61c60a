//! The one masking module: how personal values look to roles that may not see them, and in
//! logs.

/// `AB****89`: first two and last two characters kept.
pub fn passport(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

/// `j***@example.com`.
pub fn email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// `***-***-1234`: the last four digits kept.
pub fn phone(s: &str) -> String {
    let digits: Vec<char> = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("***-***-{tail}")
}

/// Personal fields that are credentials, not facts about a person: shown to no one, not even
/// to an operator replaying the log with the master key.
pub const SECRET_FIELDS: [&str; 3] = ["password_hash", "secret", "backup_code_hashes"];

/// What is shown for a secret field.
pub const REDACTED: &str = "[REDACTED]";

/// A name as `J*** D***`: the first letter of each word, enough to tell records apart in a
/// compliance review without spelling the person out.
pub fn name(s: &str) -> String {
    s.split_whitespace()
        .map(|w| {
            let first: String = w.chars().take(1).collect();
            format!("{first}***")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a stored personal field of an event is shown: in clear when `clear` (the caller may see
/// personal data), masked by its kind otherwise; secrets never; the `[ERASED]` and `[EXPIRED]`
/// markers as they are. Free text (notes, file names) has no useful partial form and is
/// replaced whole.
pub fn field(key: &str, value: &str, clear: bool) -> String {
    if SECRET_FIELDS.contains(&key) {
        return REDACTED.to_owned();
    }
    if clear || value == crate::personal::ERASED || value == crate::personal::EXPIRED {
        return value.to_owned();
    }
    match key {
        "email" => email(value),
        "phone" => phone(value),
        "passport_number" => passport(value),
        "name" => name(value),
        _ => "[MASKED]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_are_masked_by_kind_secrets_never_show_and_markers_stay() {
        assert_eq!(
            field("email", "jane@example.com", false),
            "j***@example.com"
        );
        assert_eq!(field("email", "jane@example.com", true), "jane@example.com");
        assert_eq!(field("phone", "+447700900123", false), "***-***-0123");
        assert_eq!(field("passport_number", "AB1234589", false), "AB****89");
        assert_eq!(field("name", "Jane  van Doe", false), "J*** v*** D***");
        assert_eq!(field("notes", "called twice", false), "[MASKED]");
        assert_eq!(field("file_name", "passport.pdf", false), "[MASKED]");
        for secret in SECRET_FIELDS {
            assert_eq!(field(secret, "$argon2id$v=19$...", true), REDACTED);
        }
        assert_eq!(field("email", "[ERASED]", false), "[ERASED]");
        assert_eq!(field("name", "[EXPIRED]", false), "[EXPIRED]");
    }

    #[test]
    fn masks_follow_the_documented_shapes() {
        assert_eq!(passport("AB1234589"), "AB****89");
        assert_eq!(passport("AB1"), "***");
        assert_eq!(email("jane@example.com"), "j***@example.com");
        assert_eq!(phone("+442079461234"), "***-***-1234");
    }
}
