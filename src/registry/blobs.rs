//! Blobs through the registry API, for `--push` (prebuilder pushes images
//! itself, so a manifest's digest depends on prebuilder's bytes, not on an
//! engine's compressor): is a blob there (`HEAD`), link one from another
//! repository of the same registry (a cross-repository mount, no bytes
//! sent), upload one (`POST` a session, `PUT` the bytes with their digest;
//! the registry checks the digest).

use std::path::Path;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

use super::Registry;
use crate::error::{Error, Result};

/// What a blob upload sends.
pub enum BlobBody<'a> {
    Bytes(&'a [u8]),
    /// A file of `size` bytes, streamed.
    File(&'a Path, u64),
}

/// An upload may take long on a slow link; every other request keeps the
/// client's short timeout.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

impl Registry {
    fn blobs_url(&self, rest: &str) -> String {
        format!(
            "{}/v2/{}/blobs/{rest}",
            self.repo.api_base(),
            self.repo.path
        )
    }

    fn with_auth(req: reqwest::RequestBuilder, auth: Option<String>) -> reqwest::RequestBuilder {
        match auth {
            Some(a) => req.header(AUTHORIZATION, a),
            None => req,
        }
    }

    /// Whether the repository has the blob `digest`.
    pub async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let url = self.blobs_url(digest);
        let resp = self
            .send_authed(|a| Self::with_auth(self.http.head(&url), a), "pull")
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self
                .failure(
                    resp,
                    format!("looking up blob {digest} in {}", self.repo.path),
                )
                .await),
        }
    }

    /// Link the blob `digest` from the repository `from` (same registry)
    /// into this one: `true` when the registry did; `false` when it would
    /// not (it then opened an upload session, which is cancelled).
    pub async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        let url = self.blobs_url("uploads/");
        let query = [("mount", digest), ("from", from)];
        let resp = self
            .send_authed(
                |a| {
                    Self::with_auth(
                        self.http.post(&url).query(&query).header(CONTENT_LENGTH, 0),
                        a,
                    )
                },
                "pull,push",
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(location) = self.location(&resp) {
                    let _ = self
                        .send_authed(
                            |a| Self::with_auth(self.http.delete(location.clone()), a),
                            "pull,push",
                        )
                        .await;
                }
                Ok(false)
            }
            _ => Err(self
                .failure(
                    resp,
                    format!("mounting blob {digest} from {from} into {}", self.repo.path),
                )
                .await),
        }
    }

    /// Upload a blob whose digest is `digest` (one session, one `PUT`).
    pub async fn upload_blob(&self, digest: &str, body: BlobBody<'_>) -> Result<()> {
        let action = || format!("uploading blob {digest} to {}", self.repo.path);
        let url = self.blobs_url("uploads/");
        let resp = self
            .send_authed(
                |a| Self::with_auth(self.http.post(&url).header(CONTENT_LENGTH, 0), a),
                "pull,push",
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.failure(resp, action()).await);
        }
        let mut location = self.location(&resp)?;
        location.query_pairs_mut().append_pair("digest", digest);
        let (size, payload) = match body {
            BlobBody::Bytes(b) => (b.len() as u64, reqwest::Body::from(b.to_vec())),
            BlobBody::File(path, size) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| Error::io(path, e))?;
                (
                    size,
                    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                        file,
                        1 << 20,
                    )),
                )
            }
        };
        // The session's token is the one the POST just used (cached): the
        // body goes once.
        let auth = self
            .cached_token()
            .map(|t| format!("Bearer {t}"))
            .or_else(|| self.basic_auth());
        let req = Self::with_auth(
            self.http
                .put(location)
                .timeout(UPLOAD_TIMEOUT)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(payload),
            auth,
        );
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(self.failure(resp, action()).await),
        }
    }

    /// Download blob `digest` into `dst`, streamed, its digest checked.
    pub async fn download_blob(&self, digest: &str, dst: &Path) -> Result<()> {
        use futures_util::StreamExt;
        use sha2::{Digest, Sha256};
        use tokio::io::AsyncWriteExt;
        let action = || format!("downloading blob {digest} from {}", self.repo.path);
        let url = self.blobs_url(digest);
        let resp = self
            .send_authed(
                |a| Self::with_auth(self.http.get(&url).timeout(UPLOAD_TIMEOUT), a),
                "pull",
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(resp, action()).await);
        }
        let mut file = tokio::fs::File::create(dst)
            .await
            .map_err(|e| Error::io(dst, e))?;
        let mut hasher = Sha256::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(dst, e))?;
        }
        file.flush().await.map_err(|e| Error::io(dst, e))?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest {
            return Err(Error::Registry {
                registry: self.repo.registry.clone(),
                action: action(),
                source: format!("the registry sent {got}").into(),
            });
        }
        Ok(())
    }

    /// The upload session's URL (`Location`, relative or absolute).
    fn location(&self, resp: &reqwest::Response) -> Result<Url> {
        let bad = |reason: String| Error::Registry {
            registry: self.repo.registry.clone(),
            action: format!("starting an upload to {}", self.repo.path),
            source: reason.into(),
        };
        let raw = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad("the answer has no Location header".into()))?;
        let base = Url::parse(&self.repo.api_base()).map_err(|e| bad(e.to_string()))?;
        base.join(raw)
            .map_err(|e| bad(format!("Location {raw}: {e}")))
    }
}
