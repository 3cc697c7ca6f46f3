//! `prebuilder diff IMAGE_A IMAGE_B`: what changed between two prebuilt
//! environments, from their records.

use crate::cli::{DiffArgs, Format};
use crate::engine::Engine;
use crate::error::Result;
use crate::record::{self, Side};

pub async fn run<E: Engine>(engine: &E, args: &DiffArgs) -> Result<String> {
    let (ia, ra) = record::load(engine, &args.image_a).await?;
    let (ib, rb) = record::load(engine, &args.image_b).await?;
    let d = record::diff(
        Side {
            image: args.image_a.clone(),
            id: ia.id,
        },
        &ra,
        Side {
            image: args.image_b.clone(),
            id: ib.id,
        },
        &rb,
    );
    Ok(match args.format {
        Format::Json => d.to_json(),
        Format::Text => d.to_text(),
    })
}
