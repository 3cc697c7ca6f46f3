//! Fetching a platform's wheels from a real HTTP index on loopback
//! (tiny_http) that checks HTTP basic credentials: what is fetched and
//! what is kept, the cache by digest, both page formats, the hash checks,
//! the refusals, and that the password is never in a message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::*;

const ARM: &str = "numpy-2.2.6-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";
const X86: &str = "numpy-2.2.6-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const NEWER_ARM: &str = "numpy-2.2.6-py3-none-manylinux_2_28_aarch64.whl";
const PURE: &str = "tabulate-0.9.0-py3-none-any.whl";
/// Staged for x86_64 only, required only there (by its marker).
const CUDA: &str = "cuda_only-1.0-py3-none-manylinux2014_x86_64.whl";
const PASSWORD: &str = "s3cr3t-index-pw";

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A PEP 503/691 index on loopback: `files` by name under `/files/`, the
/// project pages under `/simple/<project>/` (JSON when `json` and the
/// client asks for it), every request refused without `user:PASSWORD`.
struct IndexServer {
    addr: String,
    server: Arc<tiny_http::Server>,
    /// Every request's path, and whether it carried the right credentials.
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IndexServer {
    fn start(
        files: BTreeMap<&'static str, Vec<u8>>,
        json: bool,
        lie_about: Option<&'static str>,
    ) -> IndexServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, log) = (server.clone(), seen.clone());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("user:{PASSWORD}"))
        );
        let thread = std::thread::spawn(move || {
            for request in s.incoming_requests() {
                let header = |name: &str| {
                    request
                        .headers()
                        .iter()
                        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                        .map(|h| h.value.as_str().to_string())
                };
                let authed = header("Authorization").as_deref() == Some(expected.as_str());
                let url = request.url().to_string();
                log.lock().unwrap().push((url.clone(), authed));
                let wants_json = header("Accept").is_some_and(|a| a.starts_with(simple::JSON));
                let (status, ctype, body) = if !authed {
                    (401, "text/plain", b"auth".to_vec())
                } else if let Some(project) = url
                    .strip_prefix("/simple/")
                    .and_then(|p| p.strip_suffix('/'))
                {
                    let mine: Vec<(&&str, &Vec<u8>)> = files
                        .iter()
                        .filter(|(n, _)| {
                            crate::record::normalize(n.split('-').next().unwrap()) == project
                        })
                        .collect();
                    let hash = |n: &str, b: &[u8]| {
                        if lie_about == Some(n) {
                            "0".repeat(64)
                        } else {
                            sha(b)
                        }
                    };
                    if mine.is_empty() {
                        (404, "text/plain", b"no".to_vec())
                    } else if json && wants_json {
                        let files: Vec<_> = mine.iter().map(|(n, b)| serde_json::json!({
                            "filename": n, "url": format!("/files/{n}"), "hashes": {"sha256": hash(n, b)},
                        })).collect();
                        (200, simple::JSON, serde_json::json!({"meta": {"api-version": "1.0"}, "name": project, "files": files}).to_string().into_bytes())
                    } else {
                        let anchors: String = mine
                            .iter()
                            .map(|(n, b)| {
                                format!(
                                    "<a href=\"../../files/{n}#sha256={}\">{n}</a><br>\n",
                                    hash(n, b)
                                )
                            })
                            .collect();
                        (
                            200,
                            "text/html",
                            format!("<html><body>{anchors}</body></html>").into_bytes(),
                        )
                    }
                } else if let Some(b) = url.strip_prefix("/files/").and_then(|n| files.get(n)) {
                    (200, "application/octet-stream", b.clone())
                } else {
                    (404, "text/plain", b"no".to_vec())
                };
                let response = tiny_http::Response::from_data(body)
                    .with_status_code(status)
                    .with_header(
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
                            .unwrap(),
                    );
                let _ = request.respond(response);
            }
        });
        IndexServer {
            addr,
            server,
            seen,
            thread: Some(thread),
        }
    }

    fn url(&self, password: &str) -> String {
        format!("http://user:{password}@{}/simple", self.addr)
    }

    fn downloads(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with("/files/"))
            .count()
    }
}

impl Drop for IndexServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wheels() -> BTreeMap<&'static str, Vec<u8>> {
    BTreeMap::from([
        (ARM, b"arm64 wheel bytes".to_vec()),
        (X86, b"x86_64 wheel bytes".to_vec()),
        (NEWER_ARM, b"too new for manylinux2014".to_vec()),
    ])
}

/// A staged set: `requirements` and, in the cache, the pure tabulate wheel
/// and the x86_64 numpy one.
struct Staged {
    dir: tempfile::TempDir,
    set: StagedSet,
}

fn staged(requirements: &str) -> Staged {
    let dir = tempfile::tempdir().unwrap();
    let mut artifacts = Vec::new();
    for (name, content, role) in [
        (
            "requirements.txt",
            requirements.as_bytes(),
            Role::Requirements,
        ),
        (PURE, b"pure".as_slice(), Role::RequirementsCache),
        (
            X86,
            b"x86_64 wheel bytes".as_slice(),
            Role::RequirementsCache,
        ),
        (CUDA, b"x86_64 only".as_slice(), Role::RequirementsCache),
        ("workflow.tar.gz", b"w".as_slice(), Role::Workflow),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        artifacts.push(Artifact {
            name: name.into(),
            path,
            size: content.len() as u64,
            sha256: sha(content),
            content_digest: sha(content),
            role,
            origin: None,
        });
    }
    let set = StagedSet::new(artifacts, dir.path().to_path_buf(), None);
    Staged { dir, set }
}

fn arm64() -> Platform {
    Platform::parse("linux/arm64").unwrap()
}

fn settings(vars: &[(&str, &str)]) -> Settings {
    let mut all = vec![("PIP_CONFIG_FILE", "/dev/null"), ("HOME", "/nonexistent")];
    all.extend_from_slice(vars);
    Settings::from_vars(all)
}

fn context<'a>(settings: &'a Settings, cache: &std::path::Path) -> Context<'a> {
    Context {
        settings,
        cache_dir: cache.to_path_buf(),
        python: PathBuf::from("python3"),
    }
}

fn names(set: &StagedSet) -> Vec<String> {
    set.artifacts.iter().map(|a| a.name.clone()).collect()
}

#[tokio::test]
async fn lacking_wheels_are_fetched_with_credentials_checked_and_cached_by_digest() {
    for json in [false, true] {
        let index = IndexServer::start(wheels(), json, None);
        // cuda-only is for x86_64 only (its marker); six is not staged at
        // all, which is left to pip as without --platform: neither is asked.
        let s = staged(
            "tabulate==0.9.0\nnumpy==2.2.6\ncuda-only==1.0 ; platform_machine == 'x86_64'\nsix==1.16.0\n",
        );
        let cache = tempfile::tempdir().unwrap();
        let url = index.url(PASSWORD);
        let vars = settings(&[("PIP_INDEX_URL", &url)]);
        let ctx = context(&vars, cache.path());
        let got = for_platform(&s.set, &arm64(), &ctx).await.unwrap().unwrap();
        // The x86_64 wheel is left out, the manylinux2014 arm64 one added in
        // the cache's place in manifest order (cuda-only's wheel left out too).
        assert_eq!(
            names(&got),
            ["requirements.txt", PURE, ARM, "workflow.tar.gz"],
            "json {json}"
        );
        let fetched = &got.artifacts[2];
        let bytes = std::fs::read(&fetched.path).unwrap();
        assert_eq!(bytes, b"arm64 wheel bytes");
        assert_eq!(fetched.sha256, sha(&bytes));
        assert_eq!(fetched.content_digest, fetched.sha256);
        assert_eq!(fetched.path, cache.path().join(&fetched.sha256).join(ARM));
        assert_eq!(fetched.role, Role::RequirementsCache);
        let seen = index.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|(_, authed)| *authed), "{seen:?}");
        assert_eq!(
            seen.iter().filter(|(p, _)| p == "/simple/numpy/").count(),
            1,
            "{seen:?}"
        );
        assert_eq!(index.downloads(), 1);
        // Again: the page is read, the file is not downloaded (its digest is known).
        let again = for_platform(&s.set, &arm64(), &ctx).await.unwrap().unwrap();
        assert_eq!(again.artifacts[2].path, fetched.path);
        assert_eq!(index.downloads(), 1);
        // A file changed in the cache is not trusted: downloaded anew.
        std::fs::write(&fetched.path, b"tampered").unwrap();
        let third = for_platform(&s.set, &arm64(), &ctx).await.unwrap().unwrap();
        assert_eq!(
            std::fs::read(&third.artifacts[2].path).unwrap(),
            b"arm64 wheel bytes"
        );
        assert_eq!(index.downloads(), 2);
        // amd64 is served by the staged wheels: nothing is asked.
        let amd = Platform::parse("linux/amd64").unwrap();
        let before = index.seen.lock().unwrap().len();
        assert!(for_platform(&s.set, &amd, &ctx).await.unwrap().is_none());
        assert_eq!(index.seen.lock().unwrap().len(), before);
        drop(s.dir);
    }
}

#[tokio::test]
async fn the_requirements_file_and_netrc_name_the_index_and_its_credentials() {
    let index = IndexServer::start(wheels(), false, None);
    let home = tempfile::tempdir().unwrap();
    let netrc = home.path().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login user password {PASSWORD}\n"),
    )
    .unwrap();
    let s = staged(&format!(
        "--index-url http://{}/simple\nnumpy==2.2.6\n",
        index.addr
    ));
    let cache = tempfile::tempdir().unwrap();
    // PIP_INDEX_URL is overridden by the file's --index-url.
    let vars = settings(&[
        ("PIP_INDEX_URL", "http://127.0.0.1:1/simple"),
        ("NETRC", netrc.to_str().unwrap()),
    ]);
    let got = for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
        .await
        .unwrap()
        .unwrap();
    assert!(names(&got).contains(&ARM.to_string()));

    // --no-index: nothing is fetched, the refusal is check_set's.
    let s = staged("--no-index\nnumpy==2.2.6\n");
    assert!(
        for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(check_set(&s.set, &arm64()).is_err());
}

#[tokio::test]
async fn refused_credentials_and_missing_wheels_name_the_index_without_the_password() {
    let index = IndexServer::start(wheels(), false, None);
    let cache = tempfile::tempdir().unwrap();
    let s = staged("numpy==2.2.6\n");
    let wrong = index.url("wrong-pw-123");
    let vars = settings(&[("PIP_INDEX_URL", &wrong)]);
    let e = for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
        .await
        .unwrap_err();
    let text = format!("{e}\n{}", e.hint().unwrap());
    assert!(text.contains("credentials were refused"), "{text}");
    assert!(
        text.contains(&format!("http://{}/simple", index.addr)),
        "{text}"
    );
    assert!(!text.contains("wrong-pw-123"), "{text}");
    assert_eq!(e.exit_code(), 2);

    // Only a manylinux_2_28 arm64 wheel (newer than manylinux2014) and x86_64.
    let mut files = wheels();
    files.remove(ARM);
    let index = IndexServer::start(files, true, None);
    let url = index.url(PASSWORD);
    let vars = settings(&[("PIP_INDEX_URL", &url), ("PIP_EXTRA_INDEX_URL", "")]);
    let e = for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
        .await
        .unwrap_err();
    let text = format!("{e}\n{}", e.hint().unwrap());
    assert!(text.contains("cannot build for linux/arm64"), "{text}");
    assert!(text.contains("requirement numpy==2.2.6"), "{text}");
    assert!(
        text.contains(&format!("asked: http://{}/simple", index.addr)),
        "{text}"
    );
    assert!(text.contains(NEWER_ARM), "{text}");
    assert!(
        text.contains("--requirements-cache linux/arm64=DIR"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(e.exit_code(), 2);
    assert_eq!(index.downloads(), 0, "refused before any download");

    // Unreachable: worth a retry, and still no password.
    let vars = settings(&[(
        "PIP_INDEX_URL",
        &format!("http://user:{PASSWORD}@127.0.0.1:1/simple"),
    )]);
    let e = for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(!e.to_string().contains(PASSWORD), "{e}");
}

#[tokio::test]
async fn hashes_of_the_requirement_and_of_the_index_are_checked() {
    let cache = tempfile::tempdir().unwrap();
    let index = IndexServer::start(wheels(), false, None);
    let url = index.url(PASSWORD);
    let vars = settings(&[("PIP_INDEX_URL", &url)]);
    let right = sha(b"arm64 wheel bytes");
    let s = staged(&format!("numpy==2.2.6 --hash=sha256:{right}\n"));
    assert!(
        for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
            .await
            .unwrap()
            .is_some()
    );
    let wrong = "ab".repeat(32);
    let s = staged(&format!("numpy==2.2.6 --hash=sha256:{wrong}\n"));
    let e = for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("none of the requirement's --hash values"),
        "{text}"
    );
    assert!(text.contains(&right) && text.contains(&wrong), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(e.exit_code(), 2);

    // The index's own sha256 (the link's fragment) disagrees with the bytes.
    let fresh = tempfile::tempdir().unwrap();
    let liar = IndexServer::start(wheels(), false, Some(ARM));
    let url = liar.url(PASSWORD);
    let vars = settings(&[("PIP_INDEX_URL", &url)]);
    let s = staged("numpy==2.2.6\n");
    let e = for_platform(&s.set, &arm64(), &context(&vars, fresh.path()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("but the index says"), "{e}");
    // Nothing kept from a refused download.
    let kept: Vec<_> = std::fs::read_dir(fresh.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
}

#[tokio::test]
async fn an_unpinned_line_is_refused_only_when_the_staged_wheels_do_not_serve() {
    let cache = tempfile::tempdir().unwrap();
    let vars = settings(&[("PIP_INDEX_URL", "http://127.0.0.1:1/simple")]);
    let s = staged("tabulate>=0.9\nnumpy==2.2.6\n");
    let e = for_platform(&s.set, &arm64(), &context(&vars, cache.path()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pinned with =="), "{e}");
    assert!(e.hint().unwrap().contains("pip freeze"));
    let amd = Platform::parse("linux/amd64").unwrap();
    assert!(for_platform(&s.set, &amd, &context(&vars, cache.path()))
        .await
        .unwrap()
        .is_none());
}
