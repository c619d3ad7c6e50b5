//! An in-memory [`Store`] for tests: versions are a counter, and it can be told to fail or to be
//! slow so that other crates can test how they cope with a sick storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use protocol::PictureId;

use super::{Store, StoreError, StoredMeta, StoredPicture, Version, VersionInfo};

/// The stored versions: picture -> seq -> (png, time stored in ms since the epoch).
type Versions = HashMap<String, std::collections::BTreeMap<u64, (Bytes, u64)>>;

/// The in-memory store: every picture and version in a map, gone with the value. Counts its
/// loads and saves, and fails or slows down on demand, for tests.
#[derive(Default)]
pub struct MemoryStore {
    /// The stored pictures. std Mutex: held for a few lines, never across `.await`.
    pictures: Mutex<HashMap<String, StoredPicture>>,
    /// Source of versions: every save gets a new number.
    next_version: AtomicU64,
    /// While set, load and save fail with [`StoreError::Unavailable`] (fault injection).
    failing: AtomicBool,
    /// Artificial latency of every load and save, in nanoseconds (0: none).
    delay_nanos: AtomicU64,
    /// How many loads were attempted (tests check that a picture is loaded once).
    loads: AtomicU64,
    /// How many saves succeeded.
    saves: AtomicU64,
    /// How many saves were attempted (including failed ones).
    save_attempts: AtomicU64,
    /// Every successful save, in order: (picture, what was stored).
    history: Mutex<Vec<(String, StoredMeta)>>,
    /// While set, `put_version` fails with [`StoreError::Unavailable`] (the picture's own
    /// saves still work): a history that fails alone.
    versions_failing: AtomicBool,
    /// `put_version` calls so far (including failed ones).
    version_puts: AtomicU64,
    /// The pictures' stored versions (the `history` above is something else: a log of saves).
    versions: Mutex<Versions>,
}

impl MemoryStore {
    /// An empty store: healthy, no delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every load and save fail with [`StoreError::Unavailable`] until switched back.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Delays every load and save by `delay` (`None`: no delay).
    pub fn set_delay(&self, delay: Option<Duration>) {
        let nanos = delay.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Makes `put_version` fail until switched back (the rest of the store works).
    pub fn set_versions_failing(&self, failing: bool) {
        self.versions_failing.store(failing, Ordering::SeqCst);
    }

    /// `put_version` calls so far (including failed ones).
    pub fn version_puts(&self) -> u64 {
        self.version_puts.load(Ordering::SeqCst)
    }

    /// Loads attempted so far (including failed ones).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }

    /// Successful saves so far.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }

    /// Saves attempted so far (including failed ones).
    pub fn save_attempts(&self) -> u64 {
        self.save_attempts.load(Ordering::SeqCst)
    }

    /// Every successful save so far, in order (for tests of who wrote what when).
    pub fn history(&self) -> Vec<(String, StoredMeta)> {
        protocol::sync::lock(&self.history).clone()
    }

    /// The stored picture without going through the fault switches (for assertions).
    pub fn get(&self, picture: &str) -> Option<StoredPicture> {
        self.lock().get(picture).cloned()
    }

    /// Stores a picture directly, bypassing the version check (to set up tests, or to play
    /// another writer).
    pub fn put(&self, picture: &str, png: Bytes, meta: StoredMeta) -> Version {
        let version = self.new_version();
        self.lock().insert(
            picture.to_string(),
            StoredPicture {
                png,
                meta,
                version: version.clone(),
            },
        );
        version
    }

    /// Replaces a stored picture's owner record as another owner would (bypassing the version
    /// check; the version changes, as a real write's would). Returns the new version.
    pub fn set_ownership(&self, picture: &str, ownership: super::Ownership) -> Option<Version> {
        let version = self.new_version();
        let mut pictures = self.lock();
        let stored = pictures.get_mut(picture)?;
        stored.meta.ownership = ownership;
        stored.version = version.clone();
        Some(version)
    }

    fn new_version(&self) -> Version {
        Version(format!(
            "m{}",
            self.next_version.fetch_add(1, Ordering::SeqCst) + 1
        ))
    }

    fn versions(&self) -> MutexGuard<'_, Versions> {
        protocol::sync::lock(&self.versions)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, StoredPicture>> {
        protocol::sync::lock(&self.pictures)
    }

    async fn pause_and_check(&self) -> Result<(), StoreError> {
        let nanos = self.delay_nanos.load(Ordering::SeqCst);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory store told to fail".to_string(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, picture: &PictureId) -> Result<Option<StoredPicture>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.pause_and_check().await?;
        Ok(self.lock().get(picture.as_str()).cloned())
    }

    async fn save(
        &self,
        picture: &PictureId,
        png: Bytes,
        meta: &StoredMeta,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.save_attempts.fetch_add(1, Ordering::SeqCst);
        self.pause_and_check().await?;
        let version = self.new_version();
        let mut pictures = self.lock();
        let current = pictures.get(picture.as_str()).map(|p| &p.version);
        if current != expected {
            return Err(StoreError::Conflict {
                picture: picture.to_string(),
            });
        }
        pictures.insert(
            picture.to_string(),
            StoredPicture {
                png,
                meta: meta.clone(),
                version: version.clone(),
            },
        );
        protocol::sync::lock(&self.history).push((picture.to_string(), meta.clone()));
        drop(pictures);
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(version)
    }

    async fn put_version(
        &self,
        picture: &PictureId,
        seq: u64,
        png: Bytes,
    ) -> Result<(), StoreError> {
        self.version_puts.fetch_add(1, Ordering::SeqCst);
        self.pause_and_check().await?;
        if self.versions_failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory store told to fail versions".to_string(),
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut versions = self.versions();
        let of_picture = versions.entry(picture.to_string()).or_default();
        if of_picture.contains_key(&seq) {
            return Err(StoreError::Conflict {
                picture: picture.to_string(),
            });
        }
        of_picture.insert(seq, (png, now));
        Ok(())
    }

    async fn list_versions(&self, picture: &PictureId) -> Result<Vec<VersionInfo>, StoreError> {
        self.pause_and_check().await?;
        Ok(self
            .versions()
            .get(picture.as_str())
            .map(|of_picture| {
                of_picture
                    .iter()
                    .map(|(&seq, (png, time_ms))| VersionInfo {
                        seq,
                        time_ms: *time_ms,
                        size: png.len() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_version(
        &self,
        picture: &PictureId,
        seq: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        self.pause_and_check().await?;
        Ok(self
            .versions()
            .get(picture.as_str())
            .and_then(|of_picture| of_picture.get(&seq))
            .map(|(png, _)| png.clone()))
    }

    async fn delete_version(&self, picture: &PictureId, seq: u64) -> Result<(), StoreError> {
        self.pause_and_check().await?;
        if let Some(of_picture) = self.versions().get_mut(picture.as_str()) {
            of_picture.remove(&seq);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}
