//! Moving bytes between the engine and the work folder: bundles into the [`BundleCache`], input
//! blobs into the local [`Store`] (each fetched once per worker, checked against its BLAKE3
//! digest and size, resumed at the offset reached when a download breaks), and output blobs up
//! with UploadArtifact. Every call goes through [`Session::call`], so an engine that is away is
//! waited for. It never decides an attempt's outcome: failures come back as reasons.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Request;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use weir_data::artifact::{Digest, Entry, Store};
use weir_data::bundle::{self, BundleCache, BundleLimits};
use weir_proto::v1;

use super::session::{CallError, Key, NotFound, Session};

/// The largest message sent; the proto asks for at most 1 MiB.
const CHUNK: usize = 1 << 20;
/// The longest line of a bundle archive (the engine's `bundle::MAX_LINE`), to cap downloads.
const BUNDLE_LINE: u64 = 32 * 1024;

/// Why a transfer failed, for the attempt's report.
#[derive(Debug)]
pub(crate) enum TransferError {
    /// The engine refused or the worker is stopping: nothing to report beyond this.
    Call(CallError),
    /// Something about the bytes or the local disk; the attempt fails with this reason.
    Failed(String),
}

impl From<CallError> for TransferError {
    fn from(e: CallError) -> Self {
        TransferError::Call(e)
    }
}

/// The worker's local files: the blob store, the bundle cache, a scratch folder for downloads.
pub(crate) struct Files {
    pub store: Store,
    pub bundles: BundleCache,
    tmp: PathBuf,
    /// One download per digest at a time, across attempts.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Blobs attempts still need, which eviction leaves (`evict`).
    pub pins: super::evict::Pins,
    /// The most bytes `store` keeps between attempts.
    pub cache_max: u64,
    /// Whether `store` may have grown since the last eviction. Listing the store costs a
    /// `stat` per blob, so an eviction runs only after a download or stored outputs (and once
    /// at start, for a bound lowered since the last run), not twice per step.
    grown: std::sync::atomic::AtomicBool,
}

impl Files {
    /// Opens `work_dir/blobs` (with its scratch `work_dir/tmp`) and `work_dir/bundles`.
    pub(crate) fn open(work_dir: &Path, cache_max: u64) -> Result<Files, String> {
        let store = Store::open(work_dir).map_err(|e| e.to_string())?;
        // Unsynced: every worker process re-hashes a cached bundle at its first use
        // (`checkout::first_verify`) and fetches a mismatch again, so a power loss that tore an
        // extraction costs a download, and the fsyncs of each file and folder (three for a
        // one-file bundle, on a first step's path) buy nothing here.
        let bundles = BundleCache::open(work_dir.join("bundles")).map_err(|e| e.to_string())?.unsynced();
        let (tmp, locks, pins) = (work_dir.join("tmp"), Mutex::new(HashMap::new()), Default::default());
        let grown = std::sync::atomic::AtomicBool::new(true);
        Ok(Files { store, bundles, tmp, locks, pins, cache_max, grown })
    }

    /// Notes that `store` gained blobs: the next [`Files::evict`] looks at it.
    pub(crate) fn grew(&self) {
        self.grown.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Evicts least recently used blobs past `cache_max` (on a blocking thread), if the store
    /// grew since the last time.
    pub(crate) async fn evict(&self) {
        if !self.grown.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (store, pins, max) = (self.store.clone(), self.pins.clone(), self.cache_max);
        let _ = tokio::task::spawn_blocking(move || super::evict::evict(&store, max, &pins)).await;
    }

    async fn lock(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("locks lock");
            locks.retain(|_, weak| weak.strong_count() > 0);
            match locks.get(digest).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(digest.to_string(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    fn scratch(&self, what: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Scratch(self.tmp.join(format!("{what}-{}-{n}", std::process::id())))
    }
}

/// A scratch file, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The error `get_or_fetch` gets from its fetch callback when only a cached bundle will do.
#[derive(Debug, thiserror::Error)]
#[error("not cached")]
struct NotCached;

/// What a download streams.
#[derive(Clone, Copy)]
enum Source<'a> {
    Blob(&'a str),
    Bundle(&'a str),
}

/// A download in progress, kept across retries.
struct Partial {
    file: tokio::fs::File,
    hasher: blake3::Hasher,
    written: u64,
}

/// Streams `source` into `path` (created), refusing more than `limit` bytes. Blobs resume at the
/// offset reached; a bundle starts over. Returns the BLAKE3 digest and size of what arrived.
async fn download(
    session: &Session,
    source: Source<'_>,
    path: &Path,
    limit: u64,
) -> Result<(Digest, u64), TransferError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| TransferError::Failed(format!("cannot create `{}`: {e}", path.display())))?;
    let partial = Arc::new(tokio::sync::Mutex::new(Partial { file, hasher: blake3::Hasher::new(), written: 0 }));
    let (what, not_found) = match source {
        Source::Blob(_) => ("download blob", NotFound::Probe),
        Source::Bundle(_) => ("download bundle", NotFound::Probe),
    };
    let local = session
        .call(what, not_found, |mut client, id| {
            let partial = partial.clone();
            async move {
                let mut p = partial.lock().await;
                let mut stream = match source {
                    Source::Blob(digest) => {
                        let request = v1::DownloadBlobRequest {
                            worker_id: id.to_string(),
                            digest: digest.to_string(),
                            offset: p.written,
                        };
                        client.download_blob(request).await?.into_inner()
                    }
                    Source::Bundle(digest) => {
                        if p.written > 0
                            && let Err(e) = restart(&mut p).await
                        {
                            return Ok(Err(e));
                        }
                        let request =
                            v1::DownloadBundleRequest { worker_id: id.to_string(), digest: digest.to_string() };
                        client.download_bundle(request).await?.into_inner()
                    }
                };
                while let Some(chunk) = stream.message().await? {
                    if p.written + chunk.data.len() as u64 > limit {
                        return Ok(Err(format!("the engine sent more than the expected {limit} bytes")));
                    }
                    if let Err(e) = p.file.write_all(&chunk.data).await {
                        return Ok(Err(format!("cannot write the download: {e}")));
                    }
                    p.hasher.update(&chunk.data);
                    p.written += chunk.data.len() as u64;
                }
                Ok(p.file.flush().await.map_err(|e| format!("cannot write the download: {e}")))
            }
        })
        .await?;
    local.map_err(TransferError::Failed)?;
    let p = partial.lock().await;
    Ok((Digest::from(p.hasher.finalize()), p.written))
}

async fn restart(p: &mut Partial) -> Result<(), String> {
    let reset = async {
        p.file.set_len(0).await?;
        p.file.rewind().await?;
        io::Result::Ok(())
    };
    reset.await.map_err(|e| format!("cannot restart the download: {e}"))?;
    p.hasher = blake3::Hasher::new();
    p.written = 0;
    Ok(())
}

/// Makes sure the blob of `entry` is in the local store, downloading it once per worker.
pub(crate) async fn fetch_blob(session: &Session, files: &Files, entry: &Entry) -> Result<(), TransferError> {
    if files.store.contains(&entry.digest) {
        // Used again: the cache evicts it last.
        let _ = files.store.touch(&entry.digest);
        return Ok(());
    }
    let hex = entry.digest.to_string();
    let _only_one = files.lock(&hex).await;
    if files.store.contains(&entry.digest) {
        return Ok(());
    }
    let scratch = files.scratch("blob");
    let (digest, size) = match download(session, Source::Blob(&hex), &scratch.0, entry.size).await {
        Err(TransferError::Call(CallError::Refused(status))) if status.code() == tonic::Code::NotFound => {
            return Err(TransferError::Failed(format!("input `{}`: the engine has no blob {hex}", entry.path)));
        }
        other => other?,
    };
    if digest != entry.digest || size != entry.size {
        return Err(TransferError::Failed(format!(
            "input `{}`: downloaded {size} bytes hashing to {digest}, expected {} bytes hashing to {hex}",
            entry.path, entry.size
        )));
    }
    let store = files.store.clone();
    let path = scratch.0.clone();
    let stored = tokio::task::spawn_blocking(move || store.put_file(&path))
        .await
        .map_err(|e| TransferError::Failed(format!("storing a blob: {e}")))?
        .map_err(|e| TransferError::Failed(e.to_string()))?;
    files.grew();
    if stored.0 != entry.digest {
        return Err(TransferError::Failed(format!("input `{}`: blob {hex} changed on disk while stored", entry.path)));
    }
    Ok(())
}

/// The extracted folder of the bundle `digest`, downloading it when not cached.
pub(crate) async fn bundle_dir(session: &Session, files: &Files, digest: &str) -> Result<PathBuf, TransferError> {
    // The usual case, a bundle extracted for an earlier step, is one `stat`: cheaper here than
    // a trip to the blocking pool and back (two thread wake-ups).
    if let Some(dir) = files.bundles.cached(digest) {
        return Ok(dir);
    }
    let cached = |fetch: Option<PathBuf>| {
        let cache = files.bundles.clone();
        let digest = digest.to_string();
        async move {
            let d = digest.clone();
            tokio::task::spawn_blocking(move || {
                cache.get_or_fetch(&d, |out| match fetch {
                    Some(path) => io::copy(&mut std::fs::File::open(path)?, out).map(drop),
                    None => Err(io::Error::other(NotCached)),
                })
            })
            .await
            .map_err(|e| TransferError::Failed(format!("bundle {digest}: {e}")))
        }
    };
    let failed = |e: bundle::Error| TransferError::Failed(format!("bundle {digest}: {e}"));
    let not_cached = |e: &bundle::Error| matches!(e, bundle::Error::Fetch { source, .. } if source.get_ref().is_some_and(|inner| inner.is::<NotCached>()));
    match cached(None).await? {
        Ok(dir) => return Ok(dir),
        Err(e) if not_cached(&e) => {}
        Err(e) => return Err(failed(e)),
    }
    let _only_one = files.lock(digest).await;
    match cached(None).await? {
        Ok(dir) => return Ok(dir),
        Err(e) if not_cached(&e) => {}
        Err(e) => return Err(failed(e)),
    }
    let limits = BundleLimits::default();
    let cap = limits.max_bytes.saturating_add(limits.max_files.saturating_add(1).saturating_mul(BUNDLE_LINE));
    let scratch = files.scratch("bundle");
    match download(session, Source::Bundle(digest), &scratch.0, cap).await {
        Err(TransferError::Call(CallError::Refused(status))) if status.code() == tonic::Code::NotFound => {
            return Err(TransferError::Failed(format!("the engine has no bundle {digest}")));
        }
        other => drop(other?),
    }
    cached(Some(scratch.0.clone())).await?.map_err(failed)
}

/// Uploads the blob of `entry`, an output of the attempt `key`: a header, then the bytes in
/// chunks of at most 1 MiB. The engine must answer with the same digest and size.
pub(crate) async fn upload_artifact(
    session: &Session,
    files: &Files,
    key: &Key,
    entry: &Entry,
) -> Result<(), TransferError> {
    let blob = files.store.path_of(&entry.digest);
    let response = session
        .call("upload artifact", NotFound::Reregister, |mut client, id| {
            let header = v1::UploadArtifactRequest {
                part: Some(v1::upload_artifact_request::Part::Header(v1::UploadArtifactHeader {
                    worker_id: id.to_string(),
                    attempt: Some(key.to_ref()),
                    path: entry.path.clone(),
                    size: entry.size,
                    digest: entry.digest.to_string(),
                })),
            };
            let blob = blob.clone();
            let size = entry.size;
            async move {
                let (tx, rx) = mpsc::channel(2);
                let read = async move {
                    tx.send(header).await.map_err(|_| None::<io::Error>)?;
                    let mut file = tokio::fs::File::open(&blob).await.map_err(Some)?;
                    let mut buf = vec![0u8; CHUNK.min(size as usize).max(1)];
                    loop {
                        let n = file.read(&mut buf).await.map_err(Some)?;
                        if n == 0 {
                            return Ok::<(), Option<io::Error>>(());
                        }
                        let part = Some(v1::upload_artifact_request::Part::Chunk(buf[..n].to_vec()));
                        // A closed stream means the call ended; its status says why.
                        tx.send(v1::UploadArtifactRequest { part }).await.map_err(|_| None::<io::Error>)?;
                    }
                };
                let (response, read) =
                    tokio::join!(client.upload_artifact(Request::new(ReceiverStream::new(rx))), read);
                match read {
                    Err(Some(e)) => Ok(Err(format!("cannot read the blob of output `{}`: {e}", entry.path))),
                    Ok(()) | Err(None) => response.map(|r| Ok(r.into_inner())),
                }
            }
        })
        .await?
        .map_err(TransferError::Failed)?;
    if response.digest != entry.digest.to_string() || response.size != entry.size {
        return Err(TransferError::Failed(format!(
            "output `{}`: the engine stored {} bytes hashing to {}, expected {} bytes hashing to {}",
            entry.path, response.size, response.digest, entry.size, entry.digest
        )));
    }
    Ok(())
}
