//! `prebuilder inspect IMAGE`: the record of an image prebuilder built (see
//! `crate::record`): from its label, or from the file when the label is
//! missing or too small to hold the packages.

use serde::Serialize;

use crate::cli::{Format, InspectArgs};
use crate::engine::Engine;
use crate::error::Result;
use crate::record::{load, Record};

pub async fn run<E: Engine>(engine: &E, args: &InspectArgs) -> Result<String> {
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
