//! kiln-lang owns what Kiln knows about programming languages: each language is one data file in
//! `languages/*.toml` (name, aliases, how to find the toolchain and read its real version, the entry
//! file, the compile and run command lines with their limits, extra mounts and environment), and
//! this crate parses those files, detects which toolchains this host really has, and turns a
//! program (its files and arguments) into the command lines of its compile and run stages. It knows
//! nothing of sandboxes; `kiln-engine` runs what it describes.

mod catalog;
pub mod corpus;
mod definition;
mod detect;
mod recipe;

pub use catalog::{Catalog, Detected};
pub use definition::{
    Compat, CompileSpec, DefinitionError, Language, PistonName, RunSpec, StageLimits, VersionSpec,
};
pub use detect::{DetectError, SANDBOX_PATH};
pub use recipe::{Recipe, RecipeError, SourceFile, Stage};

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
