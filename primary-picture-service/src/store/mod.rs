//! Where pictures live between runs: one small trait, several homes.
//!
//! A picture is stored as one PNG (PROTOCOL.md §6) plus its seq, width and height. Writes are
//! conditional: [`Store::save`] names the version it expects to replace (`None`: the picture
//! must not exist yet), so two writers can never silently overwrite each other.
//!
//! Next to each picture the store keeps its *history* (PROTOCOL.md §15): stored versions, each
//! a copy of the picture's PNG as flushed at one seq, under `{id}.history/{seq:020}.png` beside
//! the picture's own key or file. A version is written once (create-only, so a retry or a
//! second writer can never replace one), never partially, and deleted only by pruning.

use async_trait::async_trait;
use bytes::Bytes;
pub use protocol::snapshot::Ownership;
use protocol::PictureId;

pub mod fs;
pub mod memory;
pub mod s3;

/// An opaque version of a stored picture (an S3 ETag, a file's content hash, a counter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// What a store keeps beside a picture's pixels (PROTOCOL.md §6, docs/scaling.md "Ownership in
/// storage"): also written into the PNG itself, so the file alone describes the picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMeta {
    /// The last seq the stored picture includes: every update up to it, none after. The PNG's
    /// `tEXt` `seq` chunk (and, on S3, the object's `seq` metadata).
    pub seq: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Who owns the picture (docs/scaling.md). Every store keeps it in the PNG's `tEXt` chunks
    /// (the bytes the owner hands over, [`protocol::snapshot::with_ownership`]); the S3 store
    /// repeats it in the object metadata.
    pub ownership: Ownership,
}

impl StoredMeta {
    /// A picture nobody owns (as pictures stored before owners existed).
    pub fn new(seq: u64, width: u32, height: u32) -> StoredMeta {
        StoredMeta {
            seq,
            width,
            height,
            ownership: Ownership::NONE,
        }
    }
}

/// What a conditional write needs to know of a stored picture, read without its pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredHead {
    /// The stored picture's seq, size and owner.
    pub meta: StoredMeta,
    /// Its current version: what [`Store::save`] expects in order to replace it.
    pub version: Version,
}

/// A stored picture as loaded: its PNG, what the PNG says of it, and its version.
#[derive(Clone, Debug)]
pub struct StoredPicture {
    /// RGBA8 PNG with the `tEXt` `seq` chunk.
    pub png: Bytes,
    /// The picture's seq, size and owner, as the PNG (and the S3 metadata) carry them.
    pub meta: StoredMeta,
    /// The version loaded: what [`Store::save`] expects in order to replace it.
    pub version: Version,
}

/// Why a store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The conditional write lost: someone else wrote the picture since `expected` (or the
    /// version [`Store::put_version`] was to create already exists).
    #[error("conflict: picture {picture} was changed by another writer")]
    Conflict {
        /// The picture's id.
        picture: String,
    },
    /// The stored object exists but cannot be used (not a PNG, no seq, ...).
    #[error("corrupt picture {picture}: {reason}")]
    Corrupt {
        /// The picture's id.
        picture: String,
        /// What is wrong with it, for the log.
        reason: String,
    },
    /// Storage could not be reached or failed; worth retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Storage refused (access denied, no such bucket, ...): retrying will not help.
    #[error("storage refused: {0}")]
    Refused(String),
}

/// One stored version of a picture, as listed (without its bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The picture's seq this version shows: every update up to it, none after.
    pub seq: u64,
    /// When the version was stored, in milliseconds since the Unix epoch (the file's mtime,
    /// the object's `LastModified`: the store's own clock, so S3 says it to the second).
    pub time_ms: u64,
    /// Its size in bytes (the PNG).
    pub size: u64,
}

/// The key (relative to the store's root or prefix) of version `seq` of `picture`:
/// `{id}.history/{seq:020}.png`. Zero-padded so that key order is seq order; `.` cannot occur in
/// an id, so no picture's key ever falls under another picture's history.
pub fn version_key(picture: &str, seq: u64) -> String {
    format!("{picture}.history/{seq:020}.png")
}

/// The seq of a version's file or object name (`{seq:020}.png`); `None` for anything else
/// (a temp file, a stray object).
pub fn parse_version_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".png")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where pictures are kept. Every method takes a [`PictureId`]: the id was checked where it came
/// in, and a store uses it as it is (a file name, an object key).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The stored picture, or `None` when it has never been stored.
    async fn load(&self, picture: &PictureId) -> Result<Option<StoredPicture>, StoreError>;

    /// The stored picture's metadata and version, or `None` when it has never been stored:
    /// cheaper than [`Store::load`] where the store can (S3 `HeadObject`).
    async fn head(&self, picture: &PictureId) -> Result<Option<StoredHead>, StoreError> {
        Ok(self.load(picture).await?.map(|stored| StoredHead {
            meta: stored.meta,
            version: stored.version,
        }))
    }

    /// Replaces the stored picture atomically if its current version is `expected` (`None`:
    /// only if it does not exist). Returns the new version.
    async fn save(
        &self,
        picture: &PictureId,
        png: Bytes,
        meta: &StoredMeta,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError>;

    /// Stores `png` as version `seq` of `picture`, only if that version does not exist yet
    /// ([`StoreError::Conflict`] if it does: versions are never replaced). All or nothing: a
    /// failed write leaves no version behind.
    async fn put_version(
        &self,
        picture: &PictureId,
        seq: u64,
        png: Bytes,
    ) -> Result<(), StoreError>;

    /// The stored versions of `picture`, by seq ascending (empty when it has none).
    async fn list_versions(&self, picture: &PictureId) -> Result<Vec<VersionInfo>, StoreError>;

    /// The PNG of version `seq` of `picture`, exactly as stored, or `None`.
    async fn get_version(&self, picture: &PictureId, seq: u64)
        -> Result<Option<Bytes>, StoreError>;

    /// Deletes version `seq` of `picture`; deleting a missing version is not an error.
    async fn delete_version(&self, picture: &PictureId, seq: u64) -> Result<(), StoreError>;

    /// For logs: `file:///data`, `s3://bucket/prefix`, `memory`.
    fn describe(&self) -> String;
}
