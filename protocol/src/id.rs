//! [`PictureId`]: a picture's id, checked once where it comes in (an HTTP path, a request from a
//! broadcast service, a log record read back), so nothing behind that edge checks it again: a
//! store makes it a file name or an object key as it is (PROTOCOL.md §1:
//! `^[A-Za-z0-9_-]{1,64}$`, which leaves no room for `/`, `.` or anything a path could abuse).

use std::fmt;

/// A picture id that matches `^[A-Za-z0-9_-]{1,64}$` (PROTOCOL.md §1). The only way to make one
/// is [`PictureId::parse`] (or `TryFrom<String>`), so holding one means it was checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PictureId(String);

/// Why a text is not a picture id; its message names the text and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid picture id {0:?}: ids match ^[A-Za-z0-9_-]{{1,64}}$")]
pub struct InvalidPictureId(pub String);

impl PictureId {
    /// Longest id, in bytes (every byte is ASCII).
    pub const MAX_LEN: usize = 64;

    /// Checks `text` (PROTOCOL.md §1).
    pub fn parse(text: &str) -> Result<PictureId, InvalidPictureId> {
        if valid(text) {
            Ok(PictureId(text.to_string()))
        } else {
            Err(InvalidPictureId(text.to_string()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Picture ids match `^[A-Za-z0-9_-]{1,64}$` (PROTOCOL.md §1).
fn valid(id: &str) -> bool {
    (1..=PictureId::MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl TryFrom<String> for PictureId {
    type Error = InvalidPictureId;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if valid(&text) {
            Ok(PictureId(text))
        } else {
            Err(InvalidPictureId(text))
        }
    }
}

impl std::str::FromStr for PictureId {
    type Err = InvalidPictureId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PictureId::parse(text)
    }
}

impl std::ops::Deref for PictureId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PictureId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for PictureId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<PictureId> for String {
    fn from(id: PictureId) -> String {
        id.0
    }
}

impl fmt::Display for PictureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_protocol_ids_parse() {
        // PROTOCOL.md §1's examples, both ways (the lib's test of the check, moved here).
        assert!(valid("a"));
        assert!(valid("Az09_-"));
        assert!(valid(&"x".repeat(64)));
        assert!(!valid(""));
        assert!(!valid(&"x".repeat(65)));
        assert!(!valid("a b"));
        assert!(!valid("a/b"));
        assert!(!valid("é"));
        assert!(!valid("a.png"));
        for good in ["a", "Az09_-", &"x".repeat(64)] {
            let id = PictureId::parse(good).unwrap();
            assert_eq!(id.as_str(), good);
            assert_eq!(PictureId::try_from(good.to_string()), Ok(id));
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "../q",
            "é",
            "a.png",
            "..",
        ] {
            let error = PictureId::parse(bad).unwrap_err();
            assert_eq!(error, InvalidPictureId(bad.to_string()));
            assert!(
                error.to_string().contains("^[A-Za-z0-9_-]{1,64}$"),
                "{error}"
            );
            assert!(PictureId::try_from(bad.to_string()).is_err());
        }
    }
}
