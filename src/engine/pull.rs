//! Pulling an image through the engine (`build --pull`), with the docker
//! CLI's credentials and per-layer progress. The engine stores what it pulls,
//! so a pulled base or layer is found the next time like a built one.

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::docker::{engine_err, DockerEngine};
use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::progress::Reporter;
use crate::registry::Credential;

/// What the docker CLI would send for `registry`: the credential in the
/// engine API's form. Never logged.
pub(super) fn docker_credentials(
    server: &str,
    credential: Option<&Credential>,
) -> Option<DockerCredentials> {
    credential.map(|c| {
        let mut d = DockerCredentials {
            serveraddress: Some(server.to_string()),
            ..Default::default()
        };
        match c {
            Credential::Basic { username, password } => {
                d.username = Some(username.clone());
                d.password = Some(password.clone());
            }
            Credential::IdentityToken(t) => d.identitytoken = Some(t.clone()),
        }
        d
    })
}

impl DockerEngine {
    /// `docker pull reference`. Errors are [`Error::PullFailed`] without the
    /// credential source (the caller knows it and adds it).
    pub(super) async fn pull_image(
        &self,
        reference: &str,
        credential: Option<&Credential>,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let image = ImageRef::parse(reference);
        let failed = |reason: String| Error::PullFailed {
            image: reference.to_string(),
            registry: image.repository.registry.clone(),
            credentials: String::new(),
            reason,
        };
        // An empty tag would pull every tag of the repository.
        let options = CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest().to_string()),
            ..Default::default()
        };
        let credentials = docker_credentials(image.repository.auth_key(), credential);
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        reporter.step(&format!("pulling {reference}"));
        let mut last = String::new();
        let mut layers = std::collections::BTreeMap::<String, i64>::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let (Some(id), Some(total)) = (
                        info.id.as_ref(),
                        info.progress_detail.as_ref().and_then(|p| p.total),
                    ) {
                        layers.insert(id.clone(), total);
                    }
                    let Some(status) = info.status else { continue };
                    // Milestones only; byte progress would flood stderr.
                    let noisy = ["Downloading", "Extracting", "Waiting", "Verifying"]
                        .iter()
                        .any(|p| status.starts_with(p));
                    let line = match &info.id {
                        Some(id) => format!("{id}: {status}"),
                        None => status.clone(),
                    };
                    if !noisy && line != last {
                        reporter.step(&format!("pull {reference}: {line}"));
                        last = line;
                    }
                }
                Err(BollardError::DockerStreamError { error }) => return Err(failed(error)),
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    return Err(failed(message))
                }
                Err(e) => return Err(engine_err(&format!("pulling {reference}"), e)),
            }
        }
        let bytes: i64 = layers.values().sum();
        reporter.step(&format!(
            "pulled {reference} ({} layer(s) fetched, {:.1} MB)",
            layers.len(),
            bytes as f64 / 1e6
        ));
        Ok(())
    }
}
