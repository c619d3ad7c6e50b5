//! Writes the project's own raster vectors (the cases of `tests/common/extra.rs`) to stdout:
//!
//! ```text
//! cargo run -p raster-protocol --example gen_vectors > protocol/vectors/raster-extra.json
//! ```
//!
//! The `own_raster_vectors_are_current` test fails until the committed file is regenerated
//! after a change to the cases or the rasterizer.

#[path = "../tests/common/json.rs"]
mod json;

#[path = "../tests/common/extra.rs"]
mod extra;

fn main() {
    print!("{}", extra::file_text());
}
