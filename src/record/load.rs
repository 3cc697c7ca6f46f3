//! An image's record, read through the engine: from its label, or from the
//! file when the label is missing or too small to hold what is needed (the
//! file is read through a container, which takes seconds).

use super::{Record, LABEL_RECORD, RECORD_FILE};
use crate::engine::{ops, Engine, ImageInfo};
use crate::error::{Error, Result};

/// An image and its record, with its packages and inputs (what `inspect`
/// and `diff` show): the distributions only when the label holds them.
pub async fn load<E: Engine>(engine: &E, image: &str) -> Result<(ImageInfo, Record)> {
    read(engine, image, |r| r.packages.is_some()).await
}

/// An image and its whole record, distributions included (what an SBOM is
/// made of).
pub async fn load_complete<E: Engine>(engine: &E, image: &str) -> Result<(ImageInfo, Record)> {
    read(engine, image, Record::is_complete).await
}

async fn read<E: Engine>(
    engine: &E,
    image: &str,
    enough: impl Fn(&Record) -> bool,
) -> Result<(ImageInfo, Record)> {
    let info = ops::require(engine, image, "image").await?;
    let invalid = |reason: String| Error::RecordInvalid {
        image: image.to_string(),
        reason,
    };
    let label = info.labels.get(LABEL_RECORD).map(|l| Record::parse(l));
    if let Some(Ok(r)) = &label {
        if enough(r) {
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
