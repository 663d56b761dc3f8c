//! The `s3` plugin (also `S3`, nbdkit's name): a disk in Amazon S3 or an
//! S3-compatible store, through the `object_store` crate.
//!
//! - One object (`url=s3://BUCKET/KEY`): read-only, ranged GETs, the size
//!   from HEAD.
//! - `size=N object-size=M`: a writable disk of N bytes kept as objects of
//!   M bytes named `KEY/%016x` (nbdkit's naming). Missing objects read as
//!   zeros; a partial write is read-modify-write; trim of whole objects
//!   deletes them, and so does zero unless the client said NO_HOLE;
//!   extents report missing objects as holes.
//!
//! Credentials and settings come as the AWS tools read them: parameters,
//! then the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...), then the
//! profile (`profile=` or `AWS_PROFILE`, else `default`) in
//! `~/.aws/credentials` and `~/.aws/config` (`profile.rs`); `profile=`
//! wins over keys in the environment, as `aws --profile` does.
//! This module owns parameter handling and the `Backend`; `store` owns the
//! runtime and the object requests. May use `backend`, `params`, the http
//! plugin's credential reader; must not import rhai or `server`.

use super::PluginDef;
use crate::backend::{
    extent_type, Backend, BackendError, BlockSize, CacheMode, Errno, Extents, FuaMode, Plugin,
    Result,
};
use crate::params::{ConfigError, Params};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ClientConfigKey, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

mod profile;
mod store;

use store::{Runtime, Store};

pub const DEF: PluginDef = PluginDef {
    name: "s3",
    aliases: &["S3"],
    magic_key: Some("url"),
    params: &[
        ("url", "s3://BUCKET/KEY: the object, or the prefix with object-size= (or bucket= key=)"),
        ("bucket", "the bucket (nbdkit's form; instead of url=)"),
        ("key", "the object name, or the prefix with object-size= (with bucket=)"),
        (
            "endpoint",
            "an S3-compatible server, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, else AWS)",
        ),
        ("endpoint-url", "the same as endpoint= (nbdkit's name)"),
        ("region", "the region (default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)"),
        (
            "access-key",
            "access key id (default AWS_ACCESS_KEY_ID); `+FILE`, `-FD` and `-` (prompt) read it",
        ),
        ("secret-key", "secret access key (default AWS_SECRET_ACCESS_KEY); same forms"),
        ("session-token", "session token (default AWS_SESSION_TOKEN); same forms"),
        (
            "profile",
            "the profile in ~/.aws/credentials and ~/.aws/config (default AWS_PROFILE, else default)",
        ),
        ("size", "the disk size in object mode (a multiple of object-size=)"),
        (
            "object-size",
            "store the disk as objects of this size named KEY/%016x; makes it writable",
        ),
        ("timeout", "seconds one request may take (default 30)"),
    ],
    description: "serve a disk from Amazon S3 or an S3-compatible store (one object read-only, or objects of object-size= read-write)",
    callbacks: &["dump_plugin", "pwrite", "flush", "trim", "zero", "extents"],
    make,
};

/// The largest object-size= accepted: a read-modify-write holds one in RAM.
const MAX_OBJECT_SIZE: u64 = 1 << 30;

fn cfg(msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(format!("s3: {msg}"))
}

/// `s3://BUCKET/KEY` into its parts.
fn parse_url(url: &str) -> std::result::Result<(String, String), ConfigError> {
    let rest = url
        .strip_prefix("s3://")
        .or_else(|| url.strip_prefix("s3a://"))
        .ok_or_else(|| cfg(format!("url={url}: expected s3://BUCKET/KEY")))?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.trim_matches('/').is_empty() => {
            Ok((b.to_string(), k.to_string()))
        }
        _ => Err(cfg(format!(
            "url={url}: expected s3://BUCKET/KEY with both a bucket and a key"
        ))),
    }
}

/// A credential parameter in nbdkit's forms.
fn secret(p: &Params, key: &str) -> std::result::Result<Option<String>, ConfigError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => super::http::auth::read_password(v)
            .map(Some)
            .map_err(|e| cfg(format!("{key}=: {e}"))),
    }
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("s3", &DEF.keys())?;
    let (bucket, key) = match (p.get("url"), p.get("bucket"), p.get("key")) {
        (Some(u), None, None) => parse_url(u)?,
        (None, Some(b), Some(k)) if !b.is_empty() && !k.is_empty() => {
            (b.to_string(), k.to_string())
        }
        (Some(_), _, _) => {
            return Err(cfg(
                "give url=s3://BUCKET/KEY or bucket= and key=, not both",
            ))
        }
        _ => {
            return Err(cfg(
                "the parameter url=s3://BUCKET/KEY (or bucket= and key=) is required",
            ))
        }
    };
    let url = format!("s3://{bucket}/{key}");
    let key_path = Path::parse(key.trim_matches('/'))
        .map_err(|e| cfg(format!("{url}: the key is not a valid object name: {e}")))?;
    let size = p.size("size")?;
    let object_size = p.size("object-size")?;
    match (size, object_size) {
        (Some(_), None) => {
            return Err(cfg(
                "size= needs object-size= as well (a single object's size comes from the store)",
            ))
        }
        (None, Some(_)) => return Err(cfg("object-size= needs size= (the disk size) as well")),
        (Some(s), Some(o)) => {
            if o == 0 || o > MAX_OBJECT_SIZE {
                return Err(cfg(format!("object-size={o}: expected from 1 byte to 1G")));
            }
            if s % o != 0 {
                return Err(cfg(format!(
                    "size={s} is not a multiple of object-size={o}"
                )));
            }
        }
        (None, None) => {}
    }
    let timeout = match p.get("timeout") {
        None => 30,
        Some(v) => match v.trim().trim_end_matches('s').parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(cfg(format!(
                    "timeout={v}: expected a whole number of seconds, at least 1"
                )))
            }
        },
    };

    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            format!("{timeout}s"),
        )
        .with_retry(RetryConfig {
            backoff: Default::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(timeout.max(10)),
        });
    let prof = profile::load(p.get("profile")).map_err(cfg)?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let endpoint = p
        .get("endpoint")
        .or_else(|| p.get("endpoint-url"))
        .map(str::to_string)
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
        .or_else(|| prof.endpoint_url.clone());
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(cfg(format!(
                "endpoint={e}: expected an http:// or https:// URL"
            )));
        }
        b = b
            .with_endpoint(e.trim_end_matches('/'))
            .with_allow_http(e.starts_with("http://"));
    }
    let region = p
        .get("region")
        .map(str::to_string)
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| prof.region.clone());
    if let Some(r) = region {
        b = b.with_region(r);
    }
    // Keys: parameters, then profile= (as `aws --profile`), then the
    // environment, then AWS_PROFILE or the default profile.
    let param_key = secret(p, "access-key")?;
    let use_profile = prof.access_key.is_some()
        && param_key.is_none()
        && (p.get("profile").is_some() || env("AWS_ACCESS_KEY_ID").is_none());
    let creds = if param_key.is_some() {
        "parameters".to_string()
    } else if use_profile {
        prof.source.clone().unwrap_or_default()
    } else if env("AWS_ACCESS_KEY_ID").is_some() {
        "environment".to_string()
    } else {
        "none found (the instance metadata service is asked)".to_string()
    };
    if use_profile {
        // The profile's keys and token only (an environment token belongs
        // to the environment's keys).
        let cred = object_store::aws::AwsCredential {
            key_id: prof.access_key.clone().unwrap_or_default(),
            secret_key: prof.secret_key.clone().unwrap_or_default(),
            token: prof.session_token.clone(),
        };
        b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(cred)));
    }
    if let Some(v) = param_key {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = secret(p, "secret-key")? {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = secret(p, "session-token")? {
        b = b.with_token(v);
    }

    let rt = Runtime::new().map_err(|e| cfg(format!("cannot start the S3 runtime: {e}")))?;
    let built = rt
        .run(async move { Ok(b.build()) })
        .map_err(|e| cfg(format!("{url}: {e}")))?;
    let s3 = built.map_err(|e| cfg(format!("{url}: {e}")))?;
    let store = Store::new(Arc::new(s3), bucket, key_path, object_size);
    let where_ = endpoint.as_deref().unwrap_or("AWS");
    let size = match size {
        Some(s) => {
            let st = store.clone();
            match rt.run(async move { Ok(st.check_bucket().await) }) {
                Ok(Ok(())) => s,
                Ok(Err(e)) => {
                    return Err(cfg(format!(
                        "{url}: cannot list the objects at {where_} (does the bucket exist?): {e}"
                    )))
                }
                Err(e) => return Err(cfg(format!("{url}: {e}"))),
            }
        }
        None => {
            let st = store.clone();
            match rt.run(async move { Ok(st.head_size().await) }) {
                Ok(Ok(s)) if s > i64::MAX as u64 => {
                    return Err(cfg(format!("{url}: the size {s} is larger than 2^63-1")))
                }
                Ok(Ok(s)) => s,
                Ok(Err(object_store::Error::NotFound { .. })) => {
                    return Err(cfg(format!(
                        "{url}: no such object at {where_} (check the bucket, the key and \
                         endpoint=; for a writable disk of many objects give size= and object-size=)"
                    )))
                }
                Ok(Err(e)) => return Err(cfg(format!("{url}: HEAD at {where_} failed: {e}"))),
                Err(e) => return Err(cfg(format!("{url}: {e}"))),
            }
        }
    };
    tracing::debug!("s3: {url}: size {size}, object size {object_size:?}");
    Ok(Arc::new(S3Plugin {
        inner: Arc::new(Shared {
            rt,
            store,
            size,
            url,
            creds,
        }),
    }))
}

struct Shared {
    rt: Runtime,
    store: Arc<Store>,
    size: u64,
    url: String,
    /// Where the keys came from (never the keys), for `--dump-plugin`.
    creds: String,
}

impl Shared {
    fn object_mode(&self) -> bool {
        self.store.object_size.is_some()
    }
}

/// The process-wide plugin: the runtime, the store client and the size.
pub struct S3Plugin {
    inner: Arc<Shared>,
}

impl Plugin for S3Plugin {
    fn name(&self) -> String {
        "s3".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(S3Handle {
            inner: self.inner.clone(),
        }))
    }
    fn dump(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("url".into(), self.inner.url.clone()),
            ("size".into(), self.inner.size.to_string()),
            ("credentials".into(), self.inner.creds.clone()),
        ];
        if let Some(o) = self.inner.store.object_size {
            v.push(("object-size".into(), o.to_string()));
        }
        v
    }
}

/// One NBD connection: every connection shares the client and its pool.
struct S3Handle {
    inner: Arc<Shared>,
}

impl S3Handle {
    fn writable(&self, what: &str) -> Result<()> {
        if self.inner.object_mode() {
            Ok(())
        } else {
            Err(BackendError::new(
                Errno::Perm,
                format!(
                    "s3: {what}: {} is a single object, served read-only (give size= and \
                     object-size= for a writable disk)",
                    self.inner.url
                ),
            ))
        }
    }
}

impl Backend for S3Handle {
    fn is_blocking(&self) -> bool {
        true
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.inner.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.inner.object_mode())
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(self.inner.object_mode())
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(self.inner.object_mode())
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(self.inner.object_mode())
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(self.inner.object_mode())
    }
    fn can_fua(&self) -> Result<FuaMode> {
        // Every PUT is durable when it returns.
        Ok(if self.inner.object_mode() {
            FuaMode::Native
        } else {
            FuaMode::None
        })
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::None)
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(self
            .inner
            .store
            .object_size
            .filter(|o| o.is_power_of_two() && (512..=(32 << 20)).contains(o))
            .map(|o| BlockSize {
                minimum: 1,
                preferred: o as u32,
                maximum: u32::MAX,
            }))
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        let v = self.pread_owned(buf.len() as u32, offset, flags)?;
        buf.copy_from_slice(&v);
        Ok(())
    }
    fn pread_owned(&self, count: u32, offset: u64, _flags: u32) -> Result<Vec<u8>> {
        crate::backend::check_read("s3", count as u64, offset, self.inner.size)?;
        let st = self.inner.store.clone();
        self.inner.rt.run(st.read(count as u64, offset))
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.pwrite_owned(buf.to_vec(), offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, _flags: u32) -> Result<()> {
        self.writable("write")?;
        let st = self.inner.store.clone();
        self.inner.rt.run(st.write(bytes::Bytes::from(buf), offset))
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        // PUTs are durable when they return: nothing is buffered here.
        Ok(())
    }
    fn trim(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.writable("trim")?;
        let st = self.inner.store.clone();
        self.inner.rt.run(st.trim(count, offset))
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.writable("zero")?;
        if flags & crate::backend::flags::FAST_ZERO != 0 {
            return Err(BackendError::new(
                Errno::NotSup,
                "s3: zeroing part of an object is a read-modify-write, not fast",
            ));
        }
        let punch = flags & crate::backend::flags::MAY_TRIM != 0;
        let st = self.inner.store.clone();
        self.inner.rt.run(st.zero(count, offset, punch))
    }
    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<Extents> {
        let mut e = Extents::new(offset, count);
        let Some(os) = self.inner.store.object_size else {
            e.add(offset, count, extent_type::DATA)?;
            return Ok(e);
        };
        let first = offset / os;
        let last = (offset + count).div_ceil(os);
        let st = self.inner.store.clone();
        let present = self.inner.rt.run(st.existing(first, last))?;
        let hole = extent_type::HOLE | extent_type::ZERO;
        let mut pos = first;
        for n in present {
            if n > pos {
                e.add(pos * os, (n - pos) * os, hole)?;
            }
            e.add(n * os, os, extent_type::DATA)?;
            pos = n + 1;
        }
        if pos < last {
            e.add(pos * os, (last - pos) * os, hole)?;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &[(&str, &str)]) -> Params {
        Params::new(
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn err(v: &[(&str, &str)]) -> String {
        match make(&params(v)) {
            Ok(_) => panic!("{v:?} must be refused"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://b/dir/disk.img").unwrap(),
            ("b".to_string(), "dir/disk.img".to_string())
        );
        assert!(parse_url("s3://b").is_err());
        assert!(parse_url("s3://b/").is_err());
        assert!(parse_url("http://b/k").is_err());
    }

    #[test]
    fn bad_parameters_are_refused_before_any_request() {
        assert!(err(&[]).contains("url=s3://BUCKET/KEY"));
        assert!(err(&[("url", "s3://b/k"), ("size", "1M")]).contains("object-size="));
        assert!(err(&[("url", "s3://b/k"), ("object-size", "64k")]).contains("size="));
        assert!(err(&[
            ("url", "s3://b/k"),
            ("size", "100k"),
            ("object-size", "64k")
        ])
        .contains("not a multiple"));
        assert!(err(&[("url", "s3://b/k"), ("endpoint", "ftp://x")]).contains("http://"));
        assert!(err(&[("url", "s3://b/k"), ("bucket", "c"), ("key", "d")]).contains("not both"));
        assert!(err(&[("url", "s3://b/a//b")]).contains("not a valid object name"));
    }
}
