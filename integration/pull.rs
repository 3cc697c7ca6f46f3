//! `build --pull missing|always|never` (issue 11): the base is pulled through
//! the engine with the docker CLI's credentials, from a real htpasswd
//! `docker-registry`; each failure names the reference, the registry and the
//! credential source.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;

const USER: (&str, &str) = ("fr-user", "pw-8d1a7c-not-a-real-secret");

/// A docker CLI config directory with `auths` for `registry` (or none).
fn docker_config(dir: &Path, name: &str, registry: Option<&str>) -> PathBuf {
    use base64::Engine as _;
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let json = match registry {
        Some(r) => {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", USER.0, USER.1));
            format!(r#"{{"auths": {{"{r}": {{"auth": "{auth}"}}}}}}"#)
        }
        None => "{}".to_string(),
    };
    std::fs::write(d.join("config.json"), json).unwrap();
    d
}

/// Put the fixture Beam image into `registry` as `reference` (with the
/// docker CLI logged in through `config`), then untag it locally: the engine
/// no longer has `reference`, only the fixture's own tag.
fn publish_base(fx: &Fixtures, config: &Path, reference: &str) {
    publish(&fx.beam_image, reference, Some(config));
}

fn build(base: &str, repo: &TestRepo, req: &Path, config: &Path, pull: Option<&str>) -> Output {
    let fx = Fixtures::load();
    let build = Build::new(base)
        .repository(&repo.name)
        .requirements(req)
        .cache(&fx.demo_wheels)
        .docker_config(config);
    match pull {
        Some(p) => build.args(["--pull", p]).run(),
        None => build.run(),
    }
}

#[test]
fn pull_policy_with_an_htpasswd_registry() {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    let good = docker_config(dir.path(), "good", Some(&registry.addr));
    let anonymous = docker_config(dir.path(), "anonymous", None);
    let base = format!("{}/fr/base:{}", registry.addr, std::process::id());
    publish_base(&fx, &good, &base);
    let repo = TestRepo::new("fr-pull");
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let _untag = Untag(base.clone());

    // never: the base is absent and nothing is pulled.
    let o = build(&base, &repo, &req, &good, Some("never"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("base image {base} is not on the engine")),
        "{err}"
    );
    assert!(
        err.contains("--pull missing"),
        "the hint names the way out: {err}"
    );
    assert!(docker(&["image", "inspect", &base]).status.code() != Some(0));

    // missing (the default), without credentials: the registry refuses; the
    // error names the reference, the registry and where credentials were sought.
    let o = build(&base, &repo, &req, &anonymous, None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "base image {base} is not on the engine, and pulling it from {} failed",
            registry.addr
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "anonymous: no credentials for {} in {}",
            registry.addr,
            anonymous.join("config.json").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("docker login {}", registry.addr)),
        "{err}"
    );

    // missing, with the docker CLI's credentials: pulled, with progress, then built.
    let o = build(&base, &repo, &req, &good, None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("pulling {base}")), "{err}");
    assert!(err.contains(&format!("pulled {base}")), "{err}");
    assert!(!err.contains(USER.1), "the password never shows");
    let report = json(&o);
    let fixture_id = docker_ok(&["image", "inspect", "--format", "{{.Id}}", &fx.beam_image]);
    assert_eq!(
        report["base"]["id"],
        fixture_id.as_str(),
        "the pulled base is the fixture"
    );
    let image = report["image"].as_str().unwrap();
    let o = python_in(image, "import tabulate; print(tabulate.__version__)");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0.9.0",
        "{}",
        stderr(&o)
    );

    // missing, base now present: no pull at all.
    let o = build(&base, &repo, &req, &anonymous, None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("pulling"), "{}", stderr(&o));

    // always: pulls although present, so missing credentials fail it.
    let o = build(&base, &repo, &req, &anonymous, Some("always"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("cannot pull {base} from {}", registry.addr)),
        "{err}"
    );
    let o = build(&base, &repo, &req, &good, Some("always"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pulled {base}")),
        "{}",
        stderr(&o)
    );
}

/// Untags a reference on drop (the image itself stays: the fixture holds it).
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}
