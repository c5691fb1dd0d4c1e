//! The harnesses, embedded: where each goes in the sandbox, where the user's code goes, and the
//! command that starts it.

use super::FunctionLanguage;

/// The directory of Kiln's files inside the sandbox (the sandbox's user owns it).
pub const DIR: &str = "/tmp/.kiln";

/// A harness for an interpreted language.
#[derive(Debug, Clone, Copy)]
pub struct Harness {
    /// Its file name under [`DIR`].
    pub file: &'static str,
    /// Its source.
    pub source: &'static str,
    /// The user's code's file name under [`DIR`].
    pub user_file: &'static str,
    /// The interpreter and its options; the harness's path follows.
    pub interpreter: &'static [&'static str],
}

const PYTHON: Harness = Harness {
    file: "harness.py",
    source: include_str!("harness/python.py"),
    user_file: "user_code.py",
    interpreter: &["python3", "-B"],
};

const JAVASCRIPT: Harness = Harness {
    file: "harness.mjs",
    source: include_str!("harness/javascript.mjs"),
    user_file: "user_code.js",
    interpreter: &["node"],
};

const RUBY: Harness = Harness {
    file: "harness.rb",
    source: include_str!("harness/ruby.rb"),
    user_file: "user_code.rb",
    interpreter: &["ruby"],
};

const PHP: Harness = Harness {
    file: "harness.php",
    source: include_str!("harness/php.php"),
    user_file: "user_code.php",
    interpreter: &[
        "php",
        "-d",
        "display_errors=stderr",
        "-d",
        "memory_limit=-1",
    ],
};

/// The codelet harness.
pub const CODELET: Harness = Harness {
    file: "codelet_harness.mjs",
    source: include_str!("harness/codelet.mjs"),
    user_file: "codelet.mjs",
    interpreter: &["node"],
};

/// The harness of an interpreted language; `None` for C and C++, which get a dispatcher.
pub fn for_language(language: FunctionLanguage) -> Option<Harness> {
    match language {
        FunctionLanguage::Python => Some(PYTHON),
        FunctionLanguage::Javascript => Some(JAVASCRIPT),
        FunctionLanguage::Ruby => Some(RUBY),
        FunctionLanguage::Php => Some(PHP),
        FunctionLanguage::C | FunctionLanguage::Cpp => None,
    }
}

impl Harness {
    /// The harness's path inside the sandbox.
    pub fn path(&self) -> String {
        format!("{DIR}/{}", self.file)
    }

    /// The user's code's path inside the sandbox.
    pub fn user_path(&self) -> String {
        format!("{DIR}/{}", self.user_file)
    }

    /// The command that starts it, with `extra` options before the harness's path.
    pub fn argv(&self, extra: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = self.interpreter.iter().map(|s| s.to_string()).collect();
        argv.extend(extra.iter().cloned());
        argv.push(self.path());
        argv
    }

    /// The node flags the codelet harness asks for in its `// kiln-node-flags:` line.
    pub fn declared_node_flags(&self) -> Vec<String> {
        self.source
            .lines()
            .find_map(|l| l.trim().strip_prefix("// kiln-node-flags:"))
            .map(|flags| flags.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}
