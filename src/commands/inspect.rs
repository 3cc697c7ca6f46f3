//! `prebuilder inspect IMAGE`: the record of an image prebuilder built (see
//! `crate::record`): from its label, or from the file when the label is
//! missing or too small to hold the packages.

use serde::Serialize;

use crate::cli::{Format, InspectArgs};
use crate::engine::{Engine, ImageInfo, ImageTools};
use crate::error::{Error, Result};
use crate::record::{Record, LABEL_RECORD, RECORD_FILE};

pub async fn run<E: Engine + ImageTools>(engine: &E, args: &InspectArgs) -> Result<String> {
    let (info, record) = load(engine, &args.image).await?;
    Ok(match args.format {
        Format::Json => {
            #[derive(Serialize)]
            struct Out<'a> {
                image: &'a str,
                id: &'a str,
                tags: &'a [String],
                record: &'a Record,
            }
            serde_json::to_string_pretty(&Out {
                image: &args.image,
                id: &info.id,
                tags: &info.repo_tags,
                record: &record,
            })
            .unwrap_or_default()
                + "\n"
        }
        Format::Text => record.to_text(&args.image, &info.id),
    })
}

/// An image and its record.
pub async fn load<E: Engine + ImageTools>(engine: &E, image: &str) -> Result<(ImageInfo, Record)> {
    let info = engine
        .image(image)
        .await?
        .ok_or_else(|| Error::ImageMissing {
            what: "image",
            image: image.to_string(),
        })?;
    let invalid = |reason: String| Error::RecordInvalid {
        image: image.to_string(),
        reason,
    };
    let label = info.labels.get(LABEL_RECORD).map(|l| Record::parse(l));
    if let Some(Ok(r)) = &label {
        if r.packages.is_some() {
            return Ok((info, r.clone()));
        }
    }
    match engine.read_file(&info.id, RECORD_FILE).await? {
        Some(bytes) => {
            let r = Record::parse(&String::from_utf8_lossy(&bytes)).map_err(invalid)?;
            Ok((info, r))
        }
        None => match label {
            Some(Ok(r)) => Ok((info, r)),
            Some(Err(reason)) => Err(invalid(reason)),
            None => Err(Error::RecordMissing {
                image: image.to_string(),
                file: RECORD_FILE,
            }),
        },
    }
}
