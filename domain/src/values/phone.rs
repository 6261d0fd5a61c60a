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

    #[test]
    fn letters_and_too_short_or_too_long_numbers_are_refused() {
        for bad in [
            "+44 20 7946 095X",
            "phone",
            "+1",
            "+44 20",
            "+44 20 7946 0958 1234 5678",
            "+999 1234567",
        ] {
            assert!(
                PhoneE164::parse(bad, Some("GB")).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    /// The E.164 shape: `+`, a non-zero first digit, at most 15 digits in all.
    fn is_e164(s: &str) -> bool {
        s.strip_prefix('+').is_some_and(|d| {
            (7..=15).contains(&d.len())
                && d.bytes().all(|b| b.is_ascii_digit())
                && !d.starts_with('0')
        })
    }

    proptest! {
        #[test]
        fn any_input_never_panics_the_parser(s in "\\PC{0,50}", region in "[A-Za-z]{0,3}") {
            let _ = PhoneE164::parse(&s, Some(region.as_str()));
            let _ = PhoneE164::parse(&s, None);
        }

        #[test]
        fn e164_output_always_has_the_e164_shape_and_reparses_equal(
            s in "\\+?[1-9][0-9 ()-]{5,16}",
            region in proptest::sample::select(vec!["GB", "EG", "US", "DE", "FR"]),
        ) {
            if let Ok(p) = PhoneE164::parse(&s, Some(region)) {
                prop_assert!(is_e164(p.as_str()), "{} is not E.164", p.as_str());
                prop_assert_eq!(PhoneE164::parse(p.as_str(), None), Ok(p.clone()));
                prop_assert_eq!(PhoneE164::parse(p.as_str(), Some(region)), Ok(p.clone()));
            }
        }

        #[test]
        fn parsing_never_panics_and_e164_output_parses_to_itself(s in "[+0-9 ()-]{0,30}") {
            if let Ok(p) = PhoneE164::parse(&s, Some("GB")) {
                prop_assert!(p.as_str().starts_with('+'));
                prop_assert_eq!(PhoneE164::from_stored(p.as_str()), Ok(p.clone()));
            }
        }
    }
}
