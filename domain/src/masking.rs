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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_documented_shapes() {
        assert_eq!(passport("AB1234589"), "AB****89");
        assert_eq!(passport("AB1"), "***");
        assert_eq!(email("jane@example.com"), "j***@example.com");
        assert_eq!(phone("+442079461234"), "***-***-1234");
    }
}
