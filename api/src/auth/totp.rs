//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew either way) and backup
//! codes. The current time is passed in, so tests pin it.
//!
//! Which time step a code matched is handed to the domain, which accepts each step once
//! (`UserTotpUsed` in the user's stream), so a replayed code is refused on every node and
//! after restarts.
//!
//! Backup codes are 80 random bits each (20 hex digits, shown as four groups of five) and
//! stored as SHA-256 hashes. A slow password hash is not needed: with 80 bits of entropy an
//! offline guess costs 2^80 hash evaluations, far beyond what argon2's work factor protects
//! against, and a fast hash keeps a backup-code login from queueing on the password pool.

use chrono::{DateTime, Utc};
use egec_domain::user::credentials::{BackupCodeHashes, TotpSecret};
use sha2::{Digest, Sha256};
use totp_rs::{Builder, Secret, Totp};

/// The issuer shown by authenticator apps.
pub const ISSUER: &str = "Egec CRM";

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("random source failed")]
    Random,
    #[error("TOTP: {0}")]
    Totp(String),
}

fn random<const N: usize>() -> Result<[u8; N], TotpError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| TotpError::Random)?;
    Ok(b)
}

/// A fresh 160-bit secret (RFC 4226's recommended length).
pub fn new_secret() -> Result<TotpSecret, TotpError> {
    let encoded = Secret::from(random::<20>()?.to_vec()).to_base32();
    TotpSecret::parse(&encoded).map_err(|e| TotpError::Totp(e.to_string()))
}

fn totp(secret: &TotpSecret, account: &str) -> Result<Totp, TotpError> {
    let bytes = Secret::try_from_base32(secret.as_str())
        .map_err(|e| TotpError::Totp(e.to_string()))?
        .as_ref()
        .to_vec();
    let builder = Builder::new()
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(bytes)
        .with_issuer(Some(ISSUER));
    let builder = if account.is_empty() {
        builder
    } else {
        // The otpauth label must not hold a colon.
        builder.with_account_name(account.replace(':', "_"))
    };
    builder.build().map_err(|e| TotpError::Totp(e.to_string()))
}

/// What the user scans: the `otpauth://` URL and the same as a PNG QR code in base64.
pub fn enrolment(secret: &TotpSecret, account: &str) -> Result<(String, String), TotpError> {
    let t = totp(secret, account)?;
    let url = t.to_url().map_err(|e| TotpError::Totp(e.to_string()))?;
    let png = t
        .to_qr_base64()
        .map_err(|e| TotpError::Totp(e.to_string()))?;
    Ok((url, png))
}

/// The time step a code matches at `now` (this step, the one before or the one after), or
/// `None`. Anything but exactly six digits never matches.
pub fn check(secret: &TotpSecret, code: &str, now: DateTime<Utc>) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret, "").ok()?;
    let at = u64::try_from(now.timestamp()).ok()?;
    t.check(code, at).and_then(|step| i64::try_from(step).ok())
}

/// The code of `secret` at `at` (tests and tools).
pub fn code_at(secret: &TotpSecret, at: DateTime<Utc>) -> Option<String> {
    let t = totp(secret, "").ok()?;
    Some(t.generate(u64::try_from(at.timestamp()).ok()?).to_string())
}

fn normalise_backup_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn hash_backup_code(code: &str) -> String {
    hex::encode(Sha256::digest(normalise_backup_code(code).as_bytes()))
}

/// Ten new backup codes: as shown to the user once, and their hashes to store.
pub fn new_backup_codes() -> Result<(Vec<String>, BackupCodeHashes), TotpError> {
    let mut shown = Vec::with_capacity(BackupCodeHashes::COUNT);
    let mut hashes = Vec::with_capacity(BackupCodeHashes::COUNT);
    for _ in 0..BackupCodeHashes::COUNT {
        let digits = hex::encode(random::<10>()?);
        let code = format!(
            "{}-{}-{}-{}",
            &digits[0..5],
            &digits[5..10],
            &digits[10..15],
            &digits[15..20]
        );
        hashes.push(hash_backup_code(&code));
        shown.push(code);
    }
    let hashes = BackupCodeHashes::new(hashes).map_err(|e| TotpError::Totp(e.to_string()))?;
    Ok((shown, hashes))
}

/// Which stored backup code `code` is, comparing every hash in full (no early exit).
pub fn match_backup_code(stored: &BackupCodeHashes, code: &str) -> Option<u32> {
    let given = hash_backup_code(code);
    let mut found = None;
    for (i, h) in stored.hashes().iter().enumerate() {
        let same = h
            .bytes()
            .zip(given.bytes())
            .fold(h.len() ^ given.len(), |acc, (a, b)| {
                acc | usize::from(a ^ b)
            })
            == 0;
        if same && found.is_none() {
            found = u32::try_from(i).ok();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        // A step boundary: 1_780_000_020 is divisible by 30.
        Utc.timestamp_opt(1_780_000_020 + s, 0).single().unwrap()
    }

    #[test]
    fn a_code_matches_its_own_step_and_one_step_either_side_only() {
        let s = new_secret().unwrap();
        let code = code_at(&s, at(0)).unwrap();
        let step = 1_780_000_020 / 30;
        assert_eq!(check(&s, &code, at(0)), Some(step));
        assert_eq!(check(&s, &code, at(29)), Some(step));
        assert_eq!(check(&s, &code, at(-30)), Some(step), "one step early");
        assert_eq!(check(&s, &code, at(30)), Some(step), "one step late");
        assert_eq!(check(&s, &code, at(60)), None, "two steps late");
        assert_eq!(check(&s, &code, at(-31)), None, "two steps early");
        assert_eq!(check(&new_secret().unwrap(), &code, at(0)), None);
    }

    #[test]
    fn only_six_digits_can_match() {
        let s = new_secret().unwrap();
        let code = code_at(&s, at(0)).unwrap();
        assert_eq!(code.len(), 6);
        assert_eq!(
            check(&s, &format!(" {code} "), at(0)),
            Some(1_780_000_020 / 30)
        );
        assert_eq!(check(&s, &format!("{code}0"), at(0)), None);
        assert_eq!(check(&s, "12345a", at(0)), None);
    }

    #[test]
    fn enrolment_gives_an_otpauth_url_and_a_png_qr_code() {
        let s = new_secret().unwrap();
        let (url, png) = enrolment(&s, "ada@egec.example").unwrap();
        assert!(url.starts_with("otpauth://totp/"), "{url}");
        assert!(url.contains(&format!("secret={}", s.as_str())));
        assert!(url.contains("issuer=Egec"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png)
            .unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn backup_codes_are_ten_distinct_and_match_only_their_own_hash() {
        let (shown, hashes) = new_backup_codes().unwrap();
        assert_eq!(shown.len(), 10);
        let distinct: std::collections::BTreeSet<_> = shown.iter().collect();
        assert_eq!(distinct.len(), 10);
        for (i, code) in shown.iter().enumerate() {
            assert_eq!(code.len(), 23, "{code}");
            assert_eq!(match_backup_code(&hashes, code), Some(i as u32));
            assert!(!hashes.to_stored().contains(&code.replace('-', "")));
        }
        let loose = shown[4].replace('-', " ").to_uppercase();
        assert_eq!(match_backup_code(&hashes, &loose), Some(4));
        assert_eq!(match_backup_code(&hashes, "00000-00000-00000-00000"), None);
    }
}
