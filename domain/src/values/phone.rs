use super::Invalid;
use std::fmt;

/// A phone number in E.164 form (`+441632960001`), parsed and checked against the
/// libphonenumber metadata of the `phonenumber` crate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneE164(String);

impl PhoneE164 {
    /// Parses a number written internationally (`+44 …`) or nationally for `default_region`
    /// (an ISO 3166 alpha-2 code such as `EG`); refuses numbers that are not valid for their
    /// region.
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Self, Invalid> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(Invalid("phone is empty"));
        }
        if trimmed.len() > 40 {
            return Err(Invalid("phone is too long"));
        }
        let region = match default_region {
            Some(r) => Some(
                r.to_ascii_uppercase()
                    .parse::<phonenumber::country::Id>()
                    .map_err(|_| Invalid("default phone region is not a known country code"))?,
            ),
            None => None,
        };
        let number = phonenumber::parse(region, trimmed)
            .map_err(|_| Invalid("phone is not a phone number"))?;
        if !phonenumber::is_valid(&number) {
            return Err(Invalid("phone is not a valid number for its country"));
        }
        Ok(PhoneE164(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// Rebuilds a value that this type stored in E.164 form.
    ///
    /// The number was checked against the numbering plan when it was written; re-running
    /// libphonenumber on every read would dominate replay time and could even refuse a number
    /// that was valid when recorded but not under newer metadata. History must read back as
    /// it was, so only the E.164 shape is checked here: `+`, then 8 to 15 digits (the ITU
    /// E.164 maximum), the first not zero.
    pub fn from_stored(s: &str) -> Result<Self, Invalid> {
        let digits = s
            .strip_prefix('+')
            .ok_or(Invalid("stored phone is not in E.164 form"))?;
        let shape_ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if shape_ok {
            Ok(PhoneE164(s.to_owned()))
        } else {
            Err(Invalid("stored phone is not in E.164 form"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PhoneE164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn international_and_national_forms_become_e164() {
        assert_eq!(
            PhoneE164::parse("+44 20 7946 0958", None).unwrap().as_str(),
            "+442079460958"
        );
        assert_eq!(
            PhoneE164::parse("020 7946 0958", Some("GB"))
                .unwrap()
                .as_str(),
            "+442079460958"
        );
        assert_eq!(
            PhoneE164::parse("010 1234 5678", Some("eg"))
                .unwrap()
                .as_str(),
            "+201012345678"
        );
    }

    #[test]
    fn stored_values_are_read_back_by_shape_without_reparsing() {
        assert_eq!(
            PhoneE164::from_stored("+442079460958").unwrap().as_str(),
            "+442079460958"
        );
        for bad in [
            "442079460958",
            "+0442079460958",
            "+44 20",
            "+4420794609581234",
            "+44a2079460958",
        ] {
            assert!(PhoneE164::from_stored(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn numbers_that_are_not_valid_are_refused() {
        assert!(PhoneE164::parse("12345", None).is_err());
        assert!(PhoneE164::parse("+44 12", None).is_err());
        assert!(PhoneE164::parse("call me", Some("GB")).is_err());
        assert!(
            PhoneE164::parse("020 7946 0958", None).is_err(),
            "national form needs a region"
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_e164_output_parses_to_itself(s in "[+0-9 ()-]{0,30}") {
            if let Ok(p) = PhoneE164::parse(&s, Some("GB")) {
                prop_assert!(p.as_str().starts_with('+'));
                prop_assert_eq!(PhoneE164::from_stored(p.as_str()), Ok(p.clone()));
            }
        }
    }
}
