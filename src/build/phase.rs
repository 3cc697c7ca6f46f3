//! Which phase a build is in, for the one error that needs it: an engine
//! that stops answering in the middle of a build (a restart, a crash) is
//! reported as "the engine went away during <phase>", not as a bare
//! connection error from the HTTP client (issue 12).

use std::sync::Mutex;

use crate::error::Error;
use crate::progress::{Event, Reporter};

/// Forwards every event to `inner` and remembers the phase it starts.
pub struct Phases<'a> {
    inner: &'a dyn Reporter,
    current: Mutex<String>,
}

impl<'a> Phases<'a> {
    pub fn new(inner: &'a dyn Reporter) -> Phases<'a> {
        Phases {
            inner,
            current: Mutex::new("the build".to_string()),
        }
    }

    pub fn current(&self) -> String {
        self.current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| "the build".to_string())
    }

    /// `error`, as [`Error::EngineWentAway`] when it says the engine stopped
    /// answering after the build had started.
    pub fn explain(&self, error: Error) -> Error {
        match error {
            Error::EngineUnreachable {
                endpoint, source, ..
            } => Error::EngineWentAway {
                endpoint,
                during: self.current(),
                source,
            },
            other => other,
        }
    }
}

/// The phase an event starts, if it starts one.
fn phase(event: &Event<'_>) -> Option<String> {
    Some(match event {
        Event::CheckingBase { name } => format!("the check of {name}"),
        Event::CreatingContainer { layer, .. } => {
            format!("the creation of the {layer} layer's setup container")
        }
        Event::Uploading { layer, .. } => format!("the upload of the {layer} layer's artifacts"),
        Event::RunningSetup { layer, .. } => format!("the setup of the {layer} layer"),
        Event::Recording { layer, .. } => format!("the record of the {layer} layer"),
        Event::WritingLayer { layer } => format!("the writing of the {layer} layer"),
        Event::LoadingLayer { layer } => format!("the load of the {layer} layer"),
        Event::Committing { layer } => format!("the commit of the {layer} layer"),
        Event::BootBuilding { .. } | Event::BootCopying { .. } => "the boot layer".to_string(),
        Event::Pushing { reference } => format!("the push of {reference}"),
        _ => return None,
    })
}

impl Reporter for Phases<'_> {
    fn event(&self, event: Event<'_>) {
        if let Some(p) = phase(&event) {
            if let Ok(mut c) = self.current.lock() {
                *c = p;
            }
        }
        self.inner.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::LayerName;
    use crate::progress::Silent;

    #[test]
    fn an_unreachable_engine_mid_build_names_the_phase() {
        let p = Phases::new(&Silent);
        p.event(Event::RunningSetup {
            layer: LayerName::Dependencies,
            step: "/opt/apache/beam/boot --setup_only",
        });
        p.event(Event::SetupOutput {
            layer: LayerName::Dependencies,
            line: "Collecting six",
        });
        let e = p.explain(Error::EngineUnreachable {
            endpoint: "unix:///x.sock".into(),
            source: "connection reset".into(),
            hint: "start it".into(),
        });
        let text = e.to_string();
        assert!(
            text.contains("went away during the setup of the dependencies layer"),
            "{text}"
        );
        assert!(
            text.contains("not tagged") && text.contains("run again"),
            "{text}"
        );
        assert_eq!(
            e.exit_code(),
            crate::error::EXIT_UNAVAILABLE,
            "worth a retry"
        );
        let other = p.explain(Error::BaseMissing {
            image: "b".into(),
            engine: String::new(),
        });
        assert!(matches!(other, Error::BaseMissing { .. }));
    }
}
