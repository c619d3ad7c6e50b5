//! The S3 store: one object `{prefix}{id}.png` per picture (PROTOCOL.md §6).
//!
//! The object is the PNG itself (with its `tEXt` `seq` chunk), content type `image/png`, and
//! the user metadata `seq`, `width` and `height` so that tools can read them without
//! downloading the picture. Writes are conditional on the object's ETag (`If-Match`), or on
//! its absence (`If-None-Match: *`) for a picture's first write: of two writers racing on
//! one picture exactly one wins, the other gets [`StoreError::Conflict`].
//!
//! A picture's versions (its history, PROTOCOL.md §15) are objects beside it:
//! `{prefix}{id}.history/{seq:020}.png`, the same bytes as the picture was flushed with, written
//! with `If-None-Match: *` (created once, never replaced; S3 never shows a partial object).
//!
//! Configuration comes from the standard AWS chain (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, ...). An endpoint URL means
//! LocalStack or another S3-compatible server, which wants path-style addressing.
//!
//! Timeouts are deliberately short (connect 3 s, whole operation 30 s by default): the
//! picture actor retries failed flushes itself, so an unreachable S3 must fail quickly
//! rather than hang a flush or a cold join.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};

use protocol::snapshot::{owner_text, png_header};
use protocol::PictureId;

use super::{
    parse_version_name, version_key, Ownership, Store, StoreError, StoredHead, StoredMeta,
    StoredPicture, Version, VersionInfo,
};

/// The key prefix used when the URL names only a bucket (`s3://bucket`).
pub const DEFAULT_PREFIX: &str = "pictures/";

/// Tunables of the S3 client. Flatten into a binary's clap config with `#[command(flatten)]`.
#[derive(Clone, Debug, clap::Args)]
pub struct S3Options {
    /// Use path-style URLs (`http://host/bucket/key`) even without an endpoint override.
    /// Always on when `AWS_ENDPOINT_URL` is set (LocalStack, MinIO, ...).
    #[arg(long = "s3-force-path-style", env = "PPS_S3_FORCE_PATH_STYLE")]
    pub force_path_style: bool,
    /// Attempts per S3 request, first try included (the SDK's standard retry mode with
    /// jittered backoff). The picture actor retries failed flushes on top of this.
    #[arg(
        long = "s3-max-attempts",
        env = "PPS_S3_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,
    /// Connect timeout in milliseconds: an unreachable endpoint fails after this long.
    #[arg(
        long = "s3-connect-timeout-ms",
        env = "PPS_S3_CONNECT_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub connect_timeout_ms: u64,
    /// Timeout in milliseconds for one whole S3 operation, retries included.
    #[arg(
        long = "s3-operation-timeout-ms",
        env = "PPS_S3_OPERATION_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub operation_timeout_ms: u64,
    /// Largest object `load` accepts, in bytes; a bigger one is reported as corrupt rather
    /// than read into memory. The default fits a 4096x4096 RGBA picture stored uncompressed.
    #[arg(
        long = "s3-max-object-bytes",
        env = "PPS_S3_MAX_OBJECT_BYTES",
        default_value_t = 256 << 20
    )]
    pub max_object_bytes: u64,
}

/// Pictures as objects in one S3 bucket under one key prefix.
#[derive(Clone, Debug)]
pub struct S3Store {
    /// Cheap to clone (shared connection pool); one per store is enough.
    client: aws_sdk_s3::Client,
    /// The one bucket every picture of this store lives in.
    bucket: String,
    /// Empty or ending in `/`: the object key is `{prefix}{id}.png`.
    prefix: String,
    /// Bound on what `load` reads, so a wrong or hostile object can't exhaust memory.
    max_object_bytes: u64,
}

impl S3Store {
    /// The body of object `key` (`what` names it in errors), at most `--s3-max-object-bytes`:
    /// a larger one is corrupt, a broken stream unavailable.
    async fn read_body(
        &self,
        picture: &str,
        key: &str,
        what: &str,
        body: ByteStream,
    ) -> Result<Bytes, StoreError> {
        read_bounded(body, self.max_object_bytes)
            .await
            .map_err(|err| match err {
                ReadError::TooLarge => corrupt(
                    picture,
                    format!(
                        "{what} is larger than the {} bytes accepted",
                        self.max_object_bytes
                    ),
                ),
                ReadError::Stream(msg) => StoreError::Unavailable(format!("reading {key}: {msg}")),
            })
    }

    /// A store for `s3://BUCKET/PREFIX`, configured from the standard AWS chain.
    ///
    /// `s3://bucket` stores under the default prefix `pictures/`; `s3://bucket/` at the
    /// bucket's root; `s3://bucket/a/b` under `a/b/`.
    pub async fn from_url(url: &str, force_path_style: bool) -> Result<S3Store, StoreError> {
        let options = S3Options {
            force_path_style,
            ..S3Options::default()
        };
        Self::from_url_with(url, &options).await
    }

    /// [`S3Store::from_url`] with every tunable given.
    pub async fn from_url_with(url: &str, options: &S3Options) -> Result<S3Store, StoreError> {
        let (bucket, prefix) = parse_url(url)?;
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let client = client_from_sdk_config(&sdk, options);
        tracing::info!(
            bucket,
            prefix,
            endpoint = sdk.endpoint_url().unwrap_or("aws"),
            region = sdk.region().map(|r| r.as_ref()).unwrap_or("unset"),
            "s3 store configured"
        );
        Ok(Self::new(client, bucket, &prefix).with_max_object_bytes(options.max_object_bytes))
    }

    /// A store over an existing client (tests, or callers that configure the SDK
    /// themselves). `prefix` is normalised to end in `/` when it is not empty.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: &str) -> S3Store {
        S3Store {
            client,
            bucket: bucket.into(),
            prefix: normalize_prefix(prefix),
            max_object_bytes: S3Options::default().max_object_bytes,
        }
    }

    /// Sets the largest object `load` accepts.
    pub fn with_max_object_bytes(mut self, max: u64) -> S3Store {
        self.max_object_bytes = max;
        self
    }

    /// The object key of `picture`.
    pub fn key(&self, picture: &str) -> String {
        format!("{}{picture}.png", self.prefix)
    }

    /// The bucket, for tests and tools that read the objects directly.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The normalised key prefix (empty or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of version `seq` of `picture`.
    pub fn version_key(&self, picture: &str, seq: u64) -> String {
        format!("{}{}", self.prefix, version_key(picture, seq))
    }

    async fn put_version_object(
        &self,
        picture: &str,
        seq: u64,
        png: Bytes,
    ) -> Result<(), StoreError> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.version_key(picture, seq))
            .content_type("image/png")
            .metadata("seq", seq.to_string())
            .if_none_match("*")
            .body(ByteStream::from(png))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(&err).into_error(picture, &err)),
        }
    }

    async fn list_version_objects(&self, picture: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let prefix = format!("{}{picture}.history/", self.prefix);
        let mut versions = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let sent = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(err) => return Err(classify(&err).into_error(picture, &err)),
            };
            for object in response.contents() {
                let Some(seq) = object
                    .key()
                    .and_then(|key| key.strip_prefix(&prefix))
                    .and_then(parse_version_name)
                else {
                    continue;
                };
                versions.push(VersionInfo {
                    seq,
                    time_ms: object
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok())
                        .unwrap_or(0),
                    size: object
                        .size()
                        .and_then(|size| u64::try_from(size).ok())
                        .unwrap_or(0),
                });
            }
            match response.next_continuation_token() {
                Some(next) if response.is_truncated() == Some(true) => {
                    token = Some(next.to_string())
                }
                _ => break,
            }
        }
        versions.sort_by_key(|v| v.seq);
        Ok(versions)
    }

    async fn get_version_object(
        &self,
        picture: &str,
        seq: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let key = self.version_key(picture, seq);
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await;
        let Some(response) = found(picture, sent)? else {
            return Ok(None);
        };
        let png = self
            .read_body(picture, &key, &format!("version {seq}"), response.body)
            .await?;
        Ok(Some(png))
    }

    async fn delete_version_object(&self, picture: &str, seq: u64) -> Result<(), StoreError> {
        let sent = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.version_key(picture, seq))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(err) => match classify(&err) {
                Failure::NotFound => Ok(()),
                failure => Err(failure.into_error(picture, &err)),
            },
        }
    }

    async fn get(&self, picture: &str) -> Result<Option<StoredPicture>, StoreError> {
        let key = self.key(picture);
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await;
        let Some(response) = found(picture, sent)? else {
            return Ok(None);
        };
        let version = etag(&key, "GetObject", response.e_tag())?;
        let length = response.content_length().unwrap_or(0);
        if u64::try_from(length).unwrap_or(0) > self.max_object_bytes {
            return Err(corrupt(
                picture,
                format!(
                    "object is {length} bytes, more than the {} accepted",
                    self.max_object_bytes
                ),
            ));
        }
        let declared = response.metadata().cloned().unwrap_or_default();
        let png = self
            .read_body(picture, &key, "object", response.body)
            .await?;
        let meta = stored_meta(&png, &declared).map_err(|reason| corrupt(picture, reason))?;
        Ok(Some(StoredPicture { png, meta, version }))
    }

    async fn head_object(&self, picture: &str) -> Result<Option<StoredHead>, StoreError> {
        let key = self.key(picture);
        let sent = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await;
        let Some(response) = found(picture, sent)? else {
            return Ok(None);
        };
        let version = etag(&key, "HeadObject", response.e_tag())?;
        let declared = response.metadata().cloned().unwrap_or_default();
        let meta = declared_meta(&declared).map_err(|reason| corrupt(picture, reason))?;
        Ok(Some(StoredHead { meta, version }))
    }

    async fn put(
        &self,
        picture: &str,
        png: Bytes,
        meta: &StoredMeta,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let key = self.key(picture);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("image/png")
            .metadata("seq", meta.seq.to_string())
            .metadata("width", meta.width.to_string())
            .metadata("height", meta.height.to_string())
            .metadata("epoch", meta.ownership.epoch.to_string())
            .metadata("owner", owner_text(meta.ownership.owner))
            .metadata("released", if meta.ownership.released { "1" } else { "0" })
            .body(ByteStream::from(png));
        request = match expected {
            None => request.if_none_match("*"),
            Some(version) => request.if_match(&version.0),
        };
        match request.send().await {
            Ok(output) => output
                .e_tag()
                .map(|etag| Version(etag.to_string()))
                .ok_or_else(|| StoreError::Refused(format!("PutObject {key}: no ETag"))),
            // If-Match on a missing object answers 404: the version we expected is gone.
            Err(err) => match classify(&err) {
                Failure::NotFound => Err(StoreError::Conflict {
                    picture: picture.to_string(),
                }),
                failure => Err(failure.into_error(picture, &err)),
            },
        }
    }
}

#[async_trait]
impl Store for S3Store {
    async fn load(&self, picture: &PictureId) -> Result<Option<StoredPicture>, StoreError> {
        let result = self.get(picture).await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(err) => outcome(err),
        };
        metrics::counter!("s3_requests", "op" => "get", "outcome" => outcome).increment(1);
        if let Err(err) = &result {
            tracing::warn!(%picture, bucket = %self.bucket, error = %err, "s3 load failed");
        }
        result
    }

    async fn head(&self, picture: &PictureId) -> Result<Option<StoredHead>, StoreError> {
        let result = self.head_object(picture).await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(err) => outcome(err),
        };
        metrics::counter!("s3_requests", "op" => "head", "outcome" => outcome).increment(1);
        result
    }

    async fn save(
        &self,
        picture: &PictureId,
        png: Bytes,
        meta: &StoredMeta,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let result = self.put(picture, png, meta, expected).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => outcome(err),
        };
        metrics::counter!("s3_requests", "op" => "put", "outcome" => outcome).increment(1);
        match &result {
            Ok(version) => {
                tracing::debug!(%picture, seq = meta.seq, etag = %version.0, "s3 save done")
            }
            Err(err) => tracing::warn!(%picture, seq = meta.seq, error = %err, "s3 save failed"),
        }
        result
    }

    async fn put_version(
        &self,
        picture: &PictureId,
        seq: u64,
        png: Bytes,
    ) -> Result<(), StoreError> {
        let result = self.put_version_object(picture, seq, png).await;
        count("put_version", &result);
        result
    }

    async fn list_versions(&self, picture: &PictureId) -> Result<Vec<VersionInfo>, StoreError> {
        let result = self.list_version_objects(picture).await;
        count("list_versions", &result);
        result
    }

    async fn get_version(
        &self,
        picture: &PictureId,
        seq: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let result = self.get_version_object(picture, seq).await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(err) => outcome(err),
        };
        metrics::counter!("s3_requests", "op" => "get_version", "outcome" => outcome).increment(1);
        result
    }

    async fn delete_version(&self, picture: &PictureId, seq: u64) -> Result<(), StoreError> {
        let result = self.delete_version_object(picture, seq).await;
        count("delete_version", &result);
        result
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The S3 client for `sdk` with this store's retry, timeout and addressing rules.
pub fn client_from_sdk_config(
    sdk: &aws_config::SdkConfig,
    options: &S3Options,
) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(options.connect_timeout_ms))
                .operation_timeout(Duration::from_millis(options.operation_timeout_ms))
                .build(),
        )
        // Virtual-host addressing needs DNS for `bucket.host`, which LocalStack & co. lack.
        .force_path_style(options.force_path_style || sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Splits `s3://BUCKET[/PREFIX]` into the bucket and the normalised prefix.
pub fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    let invalid = |why: &str| StoreError::Refused(format!("invalid s3 url {url:?}: {why}"));
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("it must start with s3://"))?;
    if rest.contains(['?', '#']) {
        return Err(invalid("query strings and fragments are not supported"));
    }
    let (bucket, prefix) = match rest.split_once('/') {
        Some((bucket, prefix)) => (bucket, normalize_prefix(prefix)),
        None => (rest, DEFAULT_PREFIX.to_string()),
    };
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !bucket_ok {
        return Err(invalid(
            "the bucket name must be 3 to 63 characters of a-z, 0-9, '.' and '-'",
        ));
    }
    Ok((bucket.to_string(), prefix))
}

fn normalize_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// A read's response, `None` when the object does not exist, or the store's error.
fn found<T, E>(
    picture: &str,
    sent: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> Result<Option<T>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match sent {
        Ok(response) => Ok(Some(response)),
        Err(err) => match classify(&err) {
            Failure::NotFound => Ok(None),
            failure => Err(failure.into_error(picture, &err)),
        },
    }
}

/// The object's version from a response's ETag (every S3 response to a read has one).
fn etag(key: &str, operation: &str, etag: Option<&str>) -> Result<Version, StoreError> {
    etag.map(|etag| Version(etag.to_string()))
        .ok_or_else(|| StoreError::Refused(format!("{operation} {key}: no ETag")))
}

fn corrupt(picture: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        picture: picture.to_string(),
        reason,
    }
}

/// Counts one request of `op` in `s3_requests` by its outcome.
fn count<T>(op: &'static str, result: &Result<T, StoreError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(err) => outcome(err),
    };
    metrics::counter!("s3_requests", "op" => op, "outcome" => outcome).increment(1);
}

fn outcome(err: &StoreError) -> &'static str {
    match err {
        StoreError::Conflict { .. } => "conflict",
        StoreError::Corrupt { .. } => "corrupt",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Refused(_) => "refused",
    }
}

/// What a failed S3 call means to the store.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The object does not exist (only meaningful for reads).
    NotFound,
    /// A conditional write lost.
    Conflict,
    /// Worth retrying: network, timeouts, throttling, 5xx.
    Unavailable,
    /// Retrying won't help: access denied, no such bucket, bad request.
    Refused,
}

impl Failure {
    fn into_error<E, R>(self, picture: &str, err: &SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let detail = describe_error(err);
        match self {
            Failure::Conflict => StoreError::Conflict {
                picture: picture.to_string(),
            },
            Failure::Unavailable => StoreError::Unavailable(detail),
            Failure::Refused | Failure::NotFound => StoreError::Refused(detail),
        }
    }
}

fn classify<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Unavailable
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            classify_service(status, err.code())
        }
        // Construction failures are local (a bad config): the same request fails again.
        _ => Failure::Refused,
    }
}

fn classify_service(status: u16, code: Option<&str>) -> Failure {
    match (status, code) {
        (_, Some("NoSuchBucket")) => Failure::Refused,
        (404, _) | (_, Some("NoSuchKey")) => Failure::NotFound,
        // 409 ConditionalRequestConflict: a concurrent conditional write on the same key.
        (412, _) | (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            Failure::Conflict
        }
        (
            _,
            Some(
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeout"
                | "RequestTimeTooSkewed"
                | "InternalError"
                | "ServiceUnavailable",
            ),
        ) => Failure::Unavailable,
        (408 | 429, _) => Failure::Unavailable,
        (500..=599, _) => Failure::Unavailable,
        _ => Failure::Refused,
    }
}

fn describe_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => format!(
            "s3 {}: {}",
            service.err().code().unwrap_or("error"),
            service.err().message().unwrap_or("no message")
        ),
        other => {
            // The Display of SdkError is only the variant name; the cause is in the chain.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

enum ReadError {
    /// The body exceeded the bound: the object is not one we wrote.
    TooLarge,
    /// The connection failed mid-body: worth retrying.
    Stream(String),
}

/// Reads the body, refusing to buffer more than `max` bytes whatever the server declared.
async fn read_bounded(mut body: ByteStream, max: u64) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|err| ReadError::Stream(err.to_string()))?
    {
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The picture's meta: the object metadata when present, checked against the PNG's own
/// header and `tEXt` `seq` (PROTOCOL.md §6 makes the PNG self-describing, so a disagreement
/// means the object was not written by us).
/// The metadata of an object written by [`S3Store::save`], without reading the PNG: every field
/// must be there (an object without them was written by something else: load it instead).
fn declared_meta(declared: &HashMap<String, String>) -> Result<StoredMeta, String> {
    let field = |name: &str| -> Result<&str, String> {
        declared
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("metadata {name} is missing"))
    };
    let number = |name: &str| -> Result<u64, String> {
        let text = field(name)?;
        text.parse::<u64>()
            .map_err(|_| format!("metadata {name}={text:?} is not a decimal number"))
    };
    let side = |name: &str| -> Result<u32, String> {
        u32::try_from(number(name)?).map_err(|_| format!("metadata {name} is out of range"))
    };
    let owner = field("owner")?;
    Ok(StoredMeta {
        seq: number("seq")?,
        width: side("width")?,
        height: side("height")?,
        ownership: Ownership {
            epoch: number("epoch")?,
            owner: u64::from_str_radix(owner, 16)
                .map_err(|_| format!("metadata owner={owner:?} is not 16 hex digits"))?,
            released: field("released")? == "1",
        },
    })
}

fn stored_meta(png: &[u8], declared: &HashMap<String, String>) -> Result<StoredMeta, String> {
    let header = png_header(png).map_err(|e| e.to_string())?;
    let field = |name: &str| -> Result<Option<u64>, String> {
        declared
            .get(name)
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| format!("metadata {name}={text:?} is not a decimal number"))
            })
            .transpose()
    };
    let seq = match (field("seq")?, header.seq) {
        (Some(declared), Some(png)) if declared != png => {
            return Err(format!("metadata seq {declared} but the png says {png}"))
        }
        (Some(seq), _) | (None, Some(seq)) => seq,
        (None, None) => return Err("no seq in the metadata nor in the png".to_string()),
    };
    for (name, actual) in [("width", header.width), ("height", header.height)] {
        if let Some(declared) = field(name)? {
            if declared != u64::from(actual) {
                return Err(format!(
                    "metadata {name} {declared} but the png is {actual}"
                ));
            }
        }
    }
    // The owner record lives in the PNG (the bytes every store keeps); the metadata repeats it
    // for tools, and must agree.
    let ownership = header.ownership.unwrap_or(Ownership::NONE);
    if let Some(epoch) = field("epoch")? {
        if epoch != ownership.epoch {
            return Err(format!(
                "metadata epoch {epoch} but the png says {}",
                ownership.epoch
            ));
        }
    }
    Ok(StoredMeta {
        seq,
        width: header.width,
        height: header.height,
        ownership,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::raster::Raster;
    use protocol::snapshot::{encode_png, Compression};

    fn meta_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn urls_parse_to_bucket_and_normalised_prefix() {
        let parse = |url| parse_url(url).unwrap();
        assert_eq!(
            parse("s3://raster-pictures"),
            ("raster-pictures".into(), "pictures/".into())
        );
        assert_eq!(
            parse("s3://raster-pictures/"),
            ("raster-pictures".into(), "".into())
        );
        assert_eq!(
            parse("s3://bkt/pictures/"),
            ("bkt".into(), "pictures/".into())
        );
        assert_eq!(parse("s3://bkt/a/b"), ("bkt".into(), "a/b/".into()));
        for bad in [
            "http://bkt/x",
            "s3://",
            "s3://ab/x",
            "s3://Upper/x",
            "s3://bkt/x?y=1",
        ] {
            assert!(
                matches!(parse_url(bad), Err(StoreError::Refused(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn meta_comes_from_metadata_checked_against_the_png() {
        let png = encode_png(&Raster::new(7, 3), 42, Compression::Fast).unwrap();
        let want = StoredMeta::new(42, 7, 3);
        let full = meta_map(&[("seq", "42"), ("width", "7"), ("height", "3")]);
        assert_eq!(stored_meta(&png, &full).unwrap(), want);
        assert_eq!(stored_meta(&png, &HashMap::new()).unwrap(), want);
        for bad in [
            meta_map(&[("seq", "41")]),
            meta_map(&[("seq", "x")]),
            meta_map(&[("width", "8")]),
            meta_map(&[("height", "-3")]),
        ] {
            assert!(stored_meta(&png, &bad).is_err(), "{bad:?}");
        }
        assert!(stored_meta(b"\x89PNG\r\n\x1a\nxx", &full).is_err());
    }

    #[test]
    fn service_errors_are_classified() {
        assert_eq!(classify_service(404, Some("NoSuchKey")), Failure::NotFound);
        assert_eq!(classify_service(404, None), Failure::NotFound);
        assert_eq!(
            classify_service(404, Some("NoSuchBucket")),
            Failure::Refused
        );
        assert_eq!(
            classify_service(412, Some("PreconditionFailed")),
            Failure::Conflict
        );
        assert_eq!(
            classify_service(409, Some("ConditionalRequestConflict")),
            Failure::Conflict
        );
        assert_eq!(
            classify_service(403, Some("AccessDenied")),
            Failure::Refused
        );
        assert_eq!(
            classify_service(503, Some("SlowDown")),
            Failure::Unavailable
        );
        assert_eq!(classify_service(500, None), Failure::Unavailable);
        assert_eq!(classify_service(429, None), Failure::Unavailable);
        assert_eq!(
            classify_service(400, Some("InvalidArgument")),
            Failure::Refused
        );
    }

    /// Keys are made of the id as it is: only a [`PictureId`] reaches the store, and no text
    /// that could leave the prefix is one.
    #[test]
    fn ids_that_could_leave_the_prefix_are_refused() {
        for bad in ["", "../x", "a/b", "a.png", &"x".repeat(65)] {
            assert!(PictureId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            version_key(&PictureId::parse("Abc_09-x").unwrap(), 7),
            "Abc_09-x.history/00000000000000000007.png"
        );
    }
}
