//! Embeds every `languages/*.toml` (and its conformance corpus) in the crate, so adding a language
//! is adding a file: no code changes, and the binary needs no data directory at run time.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../languages");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut entries: Vec<_> = std::fs::read_dir(&root)
        .expect("languages/ directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    entries.sort();
    let mut out = String::from("/// Every language file: (file stem, definition, corpus if any).\npub(crate) const EMBEDDED: &[(&str, &str, Option<&str>)] = &[\n");
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let corpus = root.join("corpus").join(format!("{stem}.toml"));
        println!("cargo:rerun-if-changed={}", corpus.display());
        let corpus = if corpus.exists() {
            format!("Some(include_str!({:?}))", corpus.canonicalize().unwrap())
        } else {
            "None".to_string()
        };
        writeln!(
            out,
            "    ({stem:?}, include_str!({:?}), {corpus}),",
            path.canonicalize().unwrap()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(dest, out).unwrap();
}
