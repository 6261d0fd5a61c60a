use super::Invalid;
use std::fmt;

/// The name a file was uploaded under: its last path component, 1 to 255 characters, on one
/// line, without control, bidirectional control or invisible characters. It is shown back in
/// a `Content-Disposition` header and often names the person, so it is personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

fn acceptable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FEFF}'
                | '\u{061C}'
        )
}

impl FileName {
    /// Keeps only the last component of whatever path a client sent (`C:\x\cv.pdf` and
    /// `../../cv.pdf` both become `cv.pdf`), so a name can never point anywhere.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let last = input.rsplit(['/', '\\']).next().unwrap_or("").trim();
        if last.is_empty() || last == "." || last == ".." {
            return Err(Invalid("file name is empty"));
        }
        if last.chars().count() > 255 {
            return Err(Invalid("file name is longer than 255 characters"));
        }
        if !last.chars().all(acceptable) {
            return Err(Invalid(
                "file name contains control or invisible characters",
            ));
        }
        Ok(FileName(last.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for FileName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The types an attachment may have. The API decides it from the content's magic bytes,
/// never from what the client declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachmentType {
    Jpeg,
    Png,
    Pdf,
}

impl AttachmentType {
    /// The accepted type for a MIME type, if it is one of them.
    pub fn from_mime(mime: &str) -> Result<Self, Invalid> {
        match mime {
            "image/jpeg" => Ok(AttachmentType::Jpeg),
            "image/png" => Ok(AttachmentType::Png),
            "application/pdf" => Ok(AttachmentType::Pdf),
            _ => Err(Invalid("only JPEG, PNG and PDF files are accepted")),
        }
    }

    pub fn mime(&self) -> &'static str {
        match self {
            AttachmentType::Jpeg => "image/jpeg",
            AttachmentType::Png => "image/png",
            AttachmentType::Pdf => "application/pdf",
        }
    }
}

impl fmt::Display for AttachmentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime())
    }
}

/// A SHA-256 digest in lower-case hex (64 characters): what an attachment's stored
/// ciphertext must hash to, so a blob swapped or altered in storage is noticed on download.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let ok = input.len() == 64
            && input
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Sha256Hex(input.to_owned()))
        } else {
            Err(Invalid("digest must be 64 lower-case hex digits"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_last_path_component_is_kept() {
        for (input, name) in [
            ("cv.pdf", "cv.pdf"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\jane\\passport scan.jpg", "passport scan.jpg"),
            ("  photo.png ", "photo.png"),
        ] {
            assert_eq!(FileName::parse(input).unwrap().as_str(), name);
        }
    }

    #[test]
    fn empty_dot_and_control_names_are_refused() {
        for bad in [
            "",
            "  ",
            "dir/",
            "..",
            "a\u{0}.pdf",
            "a\nb.pdf",
            "cv\u{202E}fdp.exe",
        ] {
            assert!(FileName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FileName::parse(&"x".repeat(256)).is_err());
    }

    #[test]
    fn the_three_accepted_types_round_trip_through_their_mime_names() {
        for t in [
            AttachmentType::Jpeg,
            AttachmentType::Png,
            AttachmentType::Pdf,
        ] {
            assert_eq!(AttachmentType::from_mime(t.mime()), Ok(t));
        }
        assert!(AttachmentType::from_mime("text/html").is_err());
        assert!(AttachmentType::from_mime("application/x-msdownload").is_err());
    }

    #[test]
    fn digests_are_64_lower_case_hex_digits() {
        assert!(Sha256Hex::parse(&"ab".repeat(32)).is_ok());
        for bad in [
            "",
            "ab",
            &"AB".repeat(32),
            &"g0".repeat(32),
            &"ab".repeat(33),
        ] {
            assert!(Sha256Hex::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn a_parsed_file_name_has_no_separator_or_control_and_parses_to_itself(s in "\\PC{0,60}|[\\x00-\\x20/\\\\.a-z]{0,20}") {
            if let Ok(n) = FileName::parse(&s) {
                prop_assert!(!n.as_str().contains(['/', '\\']));
                prop_assert!(n.as_str().chars().all(acceptable));
                prop_assert_eq!(FileName::parse(n.as_str()), Ok(n.clone()));
            }
        }
    }
}
