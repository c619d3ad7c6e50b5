//! The filesystem [`Store`]: one PNG per picture at `{data_dir}/pictures/{id}.png`.
//!
//! Writes are atomic (temp file in the same directory, write, fsync, rename, fsync the
//! directory), so a crash leaves either the old or the new picture, never a torn one.
//!
//! The version of a picture is the SHA-256 of its bytes. Cheaper stamps (inode, size, mtime)
//! are not safe: a rename frees the old inode for the very next temp file, and mtimes are as
//! coarse as the kernel tick, so a stale writer could match a newer file. Conditional saves
//! compare the version while holding an exclusive `flock` on `{data_dir}/locks/{id}.lock`, so
//! they are atomic across store instances and processes sharing the directory.
//!
//! Versions (the history, PROTOCOL.md §15) live beside the picture, in
//! `{data_dir}/pictures/{id}.history/{seq:020}.png`. One is written to a temp file, synced, and
//! then hard-linked to its name: `link` fails if the name exists, so a version is created once
//! and never replaced, and never seen partially written.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use protocol::snapshot::png_header;
use protocol::PictureId;

use super::{
    parse_version_name, version_key, Ownership, Store, StoreError, StoredMeta, StoredPicture,
    Version, VersionInfo,
};

/// The filesystem store: pictures, their versions and their lock files under one data
/// directory (layout above). Several instances, in one process or several, may share it.
pub struct FsStore {
    /// Root of the data directory; pictures live in its `pictures/` subdirectory, the lock
    /// files of conditional saves in `locks/`.
    data_dir: PathBuf,
}

impl FsStore {
    /// A store rooted at `data_dir` (created on the first save if missing).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.join("pictures")
    }

    /// The picture's file: the id is a file name as it is (a [`PictureId`] has no `/` or `.`).
    fn path(&self, picture: &PictureId) -> PathBuf {
        self.dir().join(format!("{picture}.png"))
    }

    /// The directory of `picture`'s versions.
    fn history_dir(&self, picture: &PictureId) -> PathBuf {
        self.dir().join(format!("{picture}.history"))
    }

    fn version_path(&self, picture: &PictureId, seq: u64) -> PathBuf {
        self.dir().join(version_key(picture, seq))
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Unavailable(format!("{what} task failed: {e}")))?
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync", dir, e))
}

/// A fresh name in `dir` for a file being written (`{prefix}-{pid}-{random}`): never one that
/// readers look at, never one another writer picks.
fn temp_path(dir: &Path, prefix: &str) -> PathBuf {
    dir.join(format!(
        "{prefix}-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// Creates `path` with `bytes`, on disk (fsynced) when it returns.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = std::fs::File::create(path).map_err(|e| io_error("create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("write", path, e))?;
    file.sync_all().map_err(|e| io_error("fsync", path, e))
}

fn put_version_blocking(
    picture: &str,
    pictures_dir: &Path,
    dir: &Path,
    path: &Path,
    png_bytes: &[u8],
) -> Result<(), StoreError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        // The new directory's own entry must be durable for the versions in it to be.
        fsync_dir(pictures_dir)?;
    }
    let temp = temp_path(dir, ".tmp");
    let result = (|| {
        write_synced(&temp, png_bytes)?;
        // `link` refuses an existing name: create-only, atomic.
        match std::fs::hard_link(&temp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Conflict {
                    picture: picture.to_string(),
                })
            }
            Err(e) => return Err(io_error("link", path, e)),
        }
        fsync_dir(dir)
    })();
    let _ = std::fs::remove_file(&temp);
    result
}

fn list_versions_blocking(dir: &Path) -> Result<Vec<VersionInfo>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir, e)),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        let Some(seq) = entry.file_name().to_str().and_then(parse_version_name) else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Pruned while we listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("stat", &entry.path(), e)),
        };
        let time_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        versions.push(VersionInfo {
            seq,
            time_ms,
            size: meta.len(),
        });
    }
    versions.sort_by_key(|v| v.seq);
    Ok(versions)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn version_of(bytes: &[u8]) -> Version {
    Version(format!("{:x}", Sha256::digest(bytes)))
}

/// Reads seq, width, height and the owner from the PNG header and its `tEXt` chunks, without
/// decoding the pixels.
pub fn read_meta(picture: &str, png_bytes: &[u8]) -> Result<StoredMeta, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        picture: picture.to_string(),
        reason,
    };
    let header = png_header(png_bytes).map_err(|e| corrupt(e.to_string()))?;
    let seq = header
        .seq
        .ok_or_else(|| corrupt("no tEXt seq chunk".to_string()))?;
    Ok(StoredMeta {
        seq,
        width: header.width,
        height: header.height,
        ownership: header.ownership.unwrap_or(Ownership::NONE),
    })
}

/// The current version of the file at `path`, or `None` if it does not exist.
fn current_version(path: &Path) -> Result<Option<Version>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(version_of(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

fn load_blocking(picture: &str, path: &Path) -> Result<Option<StoredPicture>, StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path, e)),
    };
    // One open file: a concurrent rename replaces the name, not what we are reading.
    let len = file
        .metadata()
        .map_err(|e| io_error("stat", path, e))?
        .len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error("read", path, e))?;
    let stored_meta = read_meta(picture, &bytes)?;
    let version = version_of(&bytes);
    Ok(Some(StoredPicture {
        png: Bytes::from(bytes),
        meta: stored_meta,
        version,
    }))
}

/// Takes the exclusive lock of `picture` (released when the returned file is dropped).
#[allow(clippy::incompatible_msrv)] // `File::lock` is Rust 1.89; the toolchain is newer.
fn lock_picture(locks: &Path, picture: &str) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(locks).map_err(|e| io_error("create", locks, e))?;
    let path = locks.join(format!("{picture}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    file.lock().map_err(|e| io_error("lock", &path, e))?;
    Ok(file)
}

fn save_blocking(
    picture: &str,
    data_dir: &Path,
    path: &Path,
    png_bytes: &[u8],
    expected: Option<&Version>,
) -> Result<Version, StoreError> {
    let dir = data_dir.join("pictures");
    let dir = dir.as_path();
    let _lock = lock_picture(&data_dir.join("locks"), picture)?;
    if current_version(path)?.as_ref() != expected {
        return Err(StoreError::Conflict {
            picture: picture.to_string(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    let temp = temp_path(dir, &format!(".{picture}.png.tmp"));
    let result = (|| {
        write_synced(&temp, png_bytes)?;
        std::fs::rename(&temp, path).map_err(|e| io_error("rename", &temp, e))?;
        // The rename is durable only once the directory entry is.
        fsync_dir(dir)?;
        Ok(version_of(png_bytes))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[async_trait]
impl Store for FsStore {
    async fn load(&self, picture: &PictureId) -> Result<Option<StoredPicture>, StoreError> {
        let path = self.path(picture);
        let picture = picture.to_string();
        tokio::task::spawn_blocking(move || load_blocking(&picture, &path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("load task failed: {e}")))?
    }

    async fn save(
        &self,
        picture: &PictureId,
        png_bytes: Bytes,
        _meta: &StoredMeta,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let path = self.path(picture);
        let data_dir = self.data_dir.clone();
        let picture = picture.to_string();
        let expected = expected.cloned();
        tokio::task::spawn_blocking(move || {
            save_blocking(&picture, &data_dir, &path, &png_bytes, expected.as_ref())
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("save task failed: {e}")))?
    }

    async fn put_version(
        &self,
        picture: &PictureId,
        seq: u64,
        png: Bytes,
    ) -> Result<(), StoreError> {
        let (pictures_dir, dir) = (self.dir(), self.history_dir(picture));
        let path = self.version_path(picture, seq);
        let picture = picture.to_string();
        blocking("put version", move || {
            put_version_blocking(&picture, &pictures_dir, &dir, &path, &png)
        })
        .await
    }

    async fn list_versions(&self, picture: &PictureId) -> Result<Vec<VersionInfo>, StoreError> {
        let dir = self.history_dir(picture);
        blocking("list versions", move || list_versions_blocking(&dir)).await
    }

    async fn get_version(
        &self,
        picture: &PictureId,
        seq: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let path = self.version_path(picture, seq);
        blocking("get version", move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        })
        .await
    }

    async fn delete_version(&self, picture: &PictureId, seq: u64) -> Result<(), StoreError> {
        let path = self.version_path(picture, seq);
        blocking("delete version", move || {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("delete", &path, e)),
            }
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.data_dir.display())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::snapshot::{encode_png, Compression};
    use protocol::Raster;

    fn png_of(seq: u64, width: u32, height: u32) -> Bytes {
        let raster = Raster::new(width, height);
        Bytes::from(encode_png(&raster, seq, Compression::Fast).unwrap())
    }

    fn meta(seq: u64, width: u32, height: u32) -> StoredMeta {
        StoredMeta::new(seq, width, height)
    }

    #[tokio::test]
    async fn save_then_load_round_trips_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        assert!(store.load(&id("p")).await.unwrap().is_none());
        let png = png_of(7, 3, 2);
        let v1 = store
            .save(&id("p"), png.clone(), &meta(7, 3, 2), None)
            .await
            .unwrap();
        let loaded = store.load(&id("p")).await.unwrap().unwrap();
        assert_eq!(loaded.png, png);
        assert_eq!(loaded.meta, meta(7, 3, 2));
        assert_eq!(loaded.version, v1);
        let v2 = store
            .save(&id("p"), png_of(9, 3, 2), &meta(9, 3, 2), Some(&v1))
            .await
            .unwrap();
        assert_ne!(v1, v2);
        assert_eq!(store.load(&id("p")).await.unwrap().unwrap().meta.seq, 9);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("pictures"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["p.png".to_string()]);
    }

    #[tokio::test]
    async fn conditional_saves_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let v1 = store
            .save(&id("p"), png_of(1, 2, 2), &meta(1, 2, 2), None)
            .await
            .unwrap();
        // Exists, but the writer thinks it does not.
        let err = store
            .save(&id("p"), png_of(2, 2, 2), &meta(2, 2, 2), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        let v2 = store
            .save(&id("p"), png_of(2, 2, 2), &meta(2, 2, 2), Some(&v1))
            .await
            .unwrap();
        // A stale version loses.
        let err = store
            .save(&id("p"), png_of(3, 2, 2), &meta(3, 2, 2), Some(&v1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        // Expecting a version of a picture that does not exist loses too.
        let err = store
            .save(&id("q"), png_of(1, 2, 2), &meta(1, 2, 2), Some(&v2))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert_eq!(store.load(&id("p")).await.unwrap().unwrap().meta.seq, 2);
    }

    #[tokio::test]
    async fn garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pictures")).unwrap();
        std::fs::write(dir.path().join("pictures/bad.png"), b"not a png at all").unwrap();
        let store = FsStore::new(dir.path());
        let err = store.load(&id("bad")).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

        // A real PNG without the seq chunk is corrupt as well.
        let mut plain = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut plain, 1, 1);
            encoder.set_color(png::ColorType::Rgba);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0, 0, 0, 255]).unwrap();
        }
        std::fs::write(dir.path().join("pictures/noseq.png"), plain).unwrap();
        let err = store.load(&id("noseq")).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    /// File names are the id as it is: only a [`PictureId`] reaches the store, and no text that
    /// could leave the directory is one.
    #[test]
    fn ids_that_could_escape_are_refused() {
        for bad in ["../etc", "a/b", "..", "a.png", ""] {
            assert!(PictureId::parse(bad).is_err(), "{bad}");
        }
        let store = FsStore::new("/srv/raster");
        assert_eq!(
            store.path(&id("p-1")),
            std::path::Path::new("/srv/raster/pictures/p-1.png")
        );
    }

    fn id(text: &str) -> PictureId {
        PictureId::parse(text).unwrap()
    }
}
