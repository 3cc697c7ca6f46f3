//! An image's record, read through the engine: from its label, or from the
//! file when the label is missing or too small to hold all of it.

use super::{Record, LABEL_RECORD, RECORD_FILE};
use crate::engine::{ops, Engine, ImageInfo};
use crate::error::{Error, Result};

/// An image and its record.
pub async fn load<E: Engine>(engine: &E, image: &str) -> Result<(ImageInfo, Record)> {
    let info = ops::require(engine, image, "image").await?;
    let invalid = |reason: String| Error::RecordInvalid {
        image: image.to_string(),
        reason,
    };
    let label = info.labels.get(LABEL_RECORD).map(|l| Record::parse(l));
    if let Some(Ok(r)) = &label {
        if r.is_complete() {
            return Ok((info, r.clone()));
        }
    }
    match ops::read_file(engine, &info.id, RECORD_FILE).await? {
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
