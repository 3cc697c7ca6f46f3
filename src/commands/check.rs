//! `prebuilder check IMAGE`: probe the image (and the launch Python) and apply
//! the compatibility rules of `crate::check`.

use std::path::PathBuf;

use crate::check::{self, image_facts, CheckReport, LaunchFacts, Probe};
use crate::cli::CheckArgs;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Probe and judge; the caller prints the report and turns findings into exit status 1
/// ([`verdict`]).
pub async fn run<E: Engine>(
    engine: &E,
    args: &CheckArgs,
    settings: &crate::settings::Settings,
) -> Result<CheckReport> {
    let image = image_facts(engine, &args.image, &args.image).await?;
    let (launch, notes) = launch(args, settings).await?;
    Ok(CheckReport::new(
        image,
        launch,
        notes,
        args.pickle_library.as_deref(),
    ))
}

/// `Err(Incompatible)` when the report has findings.
pub fn verdict(report: &CheckReport) -> Result<()> {
    if report.compatible {
        Ok(())
    } else {
        Err(Error::Incompatible {
            image: report.image.image.clone(),
            findings: report.findings.len(),
        })
    }
}

/// The launch side: `--launch-python`, else `python3` on PATH when it has
/// apache-beam; otherwise a note saying why the comparison was skipped.
async fn launch(
    args: &CheckArgs,
    settings: &crate::settings::Settings,
) -> Result<(Option<LaunchFacts>, Vec<String>)> {
    if args.no_launch {
        return Ok((None, Vec::new()));
    }
    if let Some(python) = &args.launch_python {
        let probe = probe_blocking(python.clone()).await?;
        if probe.apache_beam.is_none() {
            return Err(Error::LaunchPython {
                python: python.clone(),
                reason: "apache-beam is not installed for it".into(),
            });
        }
        return Ok((
            Some(LaunchFacts {
                python: python.clone(),
                probe,
            }),
            Vec::new(),
        ));
    }
    let skipped = "the launch-side comparison was skipped (pass --launch-python)";
    let Some(python) = check::python3_on_path(settings.path()) else {
        return Ok((None, vec![format!("no python3 on PATH: {skipped}")]));
    };
    Ok(match probe_blocking(python.clone()).await {
        Ok(probe) if probe.apache_beam.is_some() => {
            (Some(LaunchFacts { python, probe }), Vec::new())
        }
        Ok(_) => (
            None,
            vec![format!(
                "python3 on PATH ({}) has no apache-beam: {skipped}",
                python.display()
            )],
        ),
        Err(e) => (None, vec![format!("{e}: {skipped}")]),
    })
}

async fn probe_blocking(python: PathBuf) -> Result<Probe> {
    let shown = python.clone();
    tokio::task::spawn_blocking(move || check::probe_launch(&python))
        .await
        .map_err(|e| Error::Task {
            action: format!("probing the launch Python {}", shown.display()),
            source: e,
        })?
}
