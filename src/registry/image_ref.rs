//! An image reference (`reference`'s grammar) as the registry API needs it:
//! its repository (registry + path, see [`RepositoryRef`]) and the tag or
//! digest to ask for. Used where prebuilder talks to a registry about an image
//! someone else named: the base (`--pull`, resolving its id without pulling).

use super::{reference, RepositoryRef};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: RepositoryRef,
    /// The repository as written (`apache/beam`, `localhost:5000/x`).
    pub written: String,
    pub tag: Option<String>,
    /// `sha256:…`
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> ImageRef {
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (reference, None),
        };
        let (name, tag) = reference::split_tag(rest);
        let tag = tag.map(str::to_string);
        ImageRef {
            repository: RepositoryRef::parse(name),
            written: name.to_string(),
            tag,
            digest,
        }
    }

    /// The repository as the engine's pull takes it (`fromImage`).
    pub fn name(&self) -> String {
        self.written.clone()
    }

    /// What to ask the registry for: the digest when pinned, else the tag
    /// (`latest` when none, as docker does).
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_like_dockers() {
        let r = ImageRef::parse("apache/beam_python3.11_sdk:2.77.0");
        assert_eq!(r.repository.registry, "docker.io");
        assert_eq!(r.repository.path, "apache/beam_python3.11_sdk");
        assert_eq!(r.tag_or_digest(), "2.77.0");

        let r = ImageRef::parse("localhost:5000/team/base");
        assert_eq!(r.repository.registry, "localhost:5000");
        assert_eq!(r.repository.path, "team/base");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_digest(), "latest");

        let r = ImageRef::parse("127.0.0.1:5000/b:v1@sha256:abc");
        assert_eq!(r.name(), "127.0.0.1:5000/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.tag_or_digest(), "sha256:abc", "a digest pins");

        let r = ImageRef::parse("python");
        assert_eq!(r.repository.path, "library/python");
        assert_eq!(r.name(), "python");
    }
}
