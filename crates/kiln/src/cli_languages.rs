//! `kiln languages`: the languages this host can run, with the versions their toolchains report.

use clap::Args;
use kiln_lang::Catalog;
use serde::Serialize;

/// Flags of `kiln languages`.
#[derive(Debug, Args)]
pub struct LanguagesArgs {
    /// Print JSON: `[{language, version, aliases, interactive}]`.
    #[arg(long)]
    json: bool,
    /// Also list the languages whose toolchain is missing, and why.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Serialize)]
struct Entry<'a> {
    language: &'a str,
    version: Option<&'a str>,
    aliases: &'a [String],
    interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
}

/// Runs `kiln languages`.
pub fn run(args: LanguagesArgs) -> i32 {
    let catalog = match Catalog::embedded() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln languages: {e}");
            return 1;
        }
    };
    let entries: Vec<Entry> = catalog
        .detected()
        .iter()
        .filter(|d| args.all || d.available())
        .map(|d| Entry {
            language: &d.language.name,
            version: d.version.as_deref().ok(),
            aliases: &d.language.aliases,
            interactive: d.language.interactive,
            unavailable: d.version.as_ref().err().map(ToString::to_string),
        })
        .collect();
    if args.json {
        match serde_json::to_string(&entries) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("kiln languages: {e}");
                return 1;
            }
        }
        return 0;
    }
    println!(
        "{:<12} {:<14} {:<12} aliases",
        "language", "version", "interactive"
    );
    for e in &entries {
        println!(
            "{:<12} {:<14} {:<12} {}",
            e.language,
            e.version.unwrap_or("-"),
            if e.interactive { "yes" } else { "no" },
            e.aliases.join(", ")
        );
        if let Some(why) = &e.unavailable {
            println!("{:<12} unavailable: {why}", "");
        }
    }
    0
}
