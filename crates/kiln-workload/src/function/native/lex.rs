//! The tokens of a C or C++ file, as far as finding a declaration needs them.
//!
//! This is not a preprocessor: `#include`s are not followed and conditions are not evaluated.
//! What it does do is what keeps declarations recognisable: line splices are joined; comments,
//! string and character literals (raw strings in C++) become single tokens, so a parenthesis or
//! brace inside them counts for nothing; preprocessor lines are dropped, except that `#if 0`
//! groups (and the `#else` of `#if 1`) are skipped and object-like `#define`s are expanded, so
//! that `#define API static` in front of a definition still reads as `static`. The names of
//! function-like macros are collected for the declaration finder, which drops their invocations
//! in front of a declaration.

use std::collections::{HashMap, HashSet};

/// A token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// An identifier or keyword.
    Ident(String),
    /// A string literal, with its text between the quotes (escapes unprocessed).
    Str(String),
    /// A character literal.
    CharLit,
    /// A number, as written.
    Number(String),
    /// `::`
    Scope,
    /// `->`
    Arrow,
    /// `...`
    Ellipsis,
    /// Any other punctuator, one character at a time (`>>` is two `>`).
    Punct(char),
    /// A braced block the declaration finder skipped (never produced by the lexer).
    Block,
}

/// A token and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub tok: Tok,
    pub line: u32,
}

impl Token {
    /// Whether this is that identifier or keyword.
    pub fn is_ident(&self, name: &str) -> bool {
        matches!(&self.tok, Tok::Ident(ident) if ident == name)
    }

    /// Whether this is that punctuator.
    pub fn is_punct(&self, punct: char) -> bool {
        self.tok == Tok::Punct(punct)
    }

    /// The identifier, if this is one.
    pub fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(ident) => Some(ident),
            _ => None,
        }
    }
}

/// A file's tokens.
#[derive(Debug, Default)]
pub(super) struct Lexed {
    /// The tokens, object-like macros expanded.
    pub tokens: Vec<Token>,
    /// The names of function-like macros defined anywhere in the file.
    pub fn_macros: HashSet<String>,
}

/// How deep object-like macros expand into each other; real code rarely nests three deep.
const MAX_EXPANSION_DEPTH: usize = 16;

/// How many tokens macro expansion may add in all, so that a macro that doubles at every level
/// cannot exhaust memory; past it, names are left unexpanded.
const EXPANSION_BUDGET: usize = 1 << 20;

/// The characters of a file with line splices removed, each with its line.
struct Source {
    chars: Vec<char>,
    lines: Vec<u32>,
}

impl Source {
    fn new(text: &str, first_line: u32) -> Self {
        let mut chars = Vec::with_capacity(text.len());
        let mut lines = Vec::with_capacity(text.len());
        let mut line = first_line;
        let mut iter = text.chars().peekable();
        while let Some(c) = iter.next() {
            if c == '\\' {
                // A backslash before the end of a line joins the two lines.
                if iter.peek() == Some(&'\n') {
                    iter.next();
                    line += 1;
                    continue;
                }
                if iter.peek() == Some(&'\r') {
                    let mut ahead = iter.clone();
                    ahead.next();
                    if ahead.peek() == Some(&'\n') {
                        iter.next();
                        iter.next();
                        line += 1;
                        continue;
                    }
                }
            }
            chars.push(c);
            lines.push(line);
            if c == '\n' {
                line += 1;
            }
        }
        Source { chars, lines }
    }

    fn at(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }

    fn starts_with(&self, pos: usize, text: &str) -> bool {
        text.chars()
            .enumerate()
            .all(|(offset, c)| self.at(pos + offset) == Some(c))
    }

    fn line(&self, pos: usize) -> u32 {
        self.lines
            .get(pos)
            .or(self.lines.last())
            .copied()
            .unwrap_or(1)
    }
}

/// How an `#if` group is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Branch {
    /// `#if 0`: this branch is skipped, the next one is read.
    Zero,
    /// `#if 1`: this branch is read, later ones are skipped.
    One,
    /// Any other condition: every branch is read, since it cannot be evaluated.
    Unknown,
}

#[derive(Debug)]
struct Cond {
    /// Whether the enclosing group is read at all.
    parent_live: bool,
    /// Whether the current branch is read.
    live: bool,
    branch: Branch,
}

/// Lexes a file.
pub(super) fn lex(text: &str, cpp: bool) -> Lexed {
    let source = Source::new(text, 1);
    let mut lexed = Lexed::default();
    let mut macros: HashMap<String, Vec<Token>> = HashMap::new();
    let mut conds: Vec<Cond> = Vec::new();
    let mut budget = EXPANSION_BUDGET;
    let mut pos = 0;
    let mut line_start = true;
    loop {
        if skip_space(&source, &mut pos) {
            line_start = true;
        }
        let Some(c) = source.at(pos) else { break };
        if c == '#' && line_start {
            let line = source.line(pos);
            let directive = read_directive(&source, &mut pos);
            let live = conds.last().is_none_or(|cond| cond.live);
            apply_directive(
                &directive,
                line,
                cpp,
                live,
                &mut conds,
                &mut macros,
                &mut lexed.fn_macros,
            );
            line_start = true;
            continue;
        }
        line_start = false;
        let token = raw_token(&source, &mut pos, cpp);
        if conds.last().is_none_or(|cond| cond.live) {
            let mut active = Vec::new();
            expand(token, &macros, &mut active, &mut budget, &mut lexed.tokens);
        }
    }
    lexed
}

/// Skips whitespace and comments; returns whether a line ended (so a `#` may start a directive).
fn skip_space(source: &Source, pos: &mut usize) -> bool {
    let mut newline = false;
    loop {
        match source.at(*pos) {
            Some('\n') => {
                newline = true;
                *pos += 1;
            }
            Some(c) if c.is_whitespace() => *pos += 1,
            Some('/') if source.starts_with(*pos, "//") => {
                while source.at(*pos).is_some_and(|c| c != '\n') {
                    *pos += 1;
                }
            }
            Some('/') if source.starts_with(*pos, "/*") => {
                *pos += 2;
                while *pos < source.chars.len() && !source.starts_with(*pos, "*/") {
                    newline |= source.at(*pos) == Some('\n');
                    *pos += 1;
                }
                *pos = (*pos + 2).min(source.chars.len());
            }
            _ => return newline,
        }
    }
}

/// Reads a directive from its `#` to the end of its line, comments removed (a block comment may
/// carry it onto further lines, as in C), and returns its text after the `#`.
fn read_directive(source: &Source, pos: &mut usize) -> String {
    let mut text = String::new();
    *pos += 1;
    let mut quote: Option<char> = None;
    while let Some(c) = source.at(*pos) {
        if let Some(q) = quote {
            text.push(c);
            *pos += 1;
            if c == '\\' {
                if let Some(next) = source.at(*pos).filter(|&next| next != '\n') {
                    text.push(next);
                    *pos += 1;
                }
            } else if c == q {
                quote = None;
            } else if c == '\n' {
                break;
            }
            continue;
        }
        if c == '\n' {
            break;
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
        } else if source.starts_with(*pos, "//") {
            while source.at(*pos).is_some_and(|c| c != '\n') {
                *pos += 1;
            }
            continue;
        } else if source.starts_with(*pos, "/*") {
            *pos += 2;
            while *pos < source.chars.len() && !source.starts_with(*pos, "*/") {
                *pos += 1;
            }
            *pos = (*pos + 2).min(source.chars.len());
            text.push(' ');
            continue;
        }
        text.push(c);
        *pos += 1;
    }
    text
}

fn apply_directive(
    directive: &str,
    line: u32,
    cpp: bool,
    live: bool,
    conds: &mut Vec<Cond>,
    macros: &mut HashMap<String, Vec<Token>>,
    fn_macros: &mut HashSet<String>,
) {
    let directive = directive.trim_start();
    let name_len = directive
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(directive.len());
    let (name, rest) = directive.split_at(name_len);
    let rest = rest.trim();
    match name {
        "if" | "ifdef" | "ifndef" => {
            let branch = match (name, rest) {
                ("if", "0") => Branch::Zero,
                ("if", "1") => Branch::One,
                _ => Branch::Unknown,
            };
            conds.push(Cond {
                parent_live: live,
                live: live && branch != Branch::Zero,
                branch,
            });
        }
        "elif" | "elifdef" | "elifndef" | "else" => {
            if let Some(cond) = conds.last_mut() {
                match cond.branch {
                    Branch::Zero => {
                        cond.live = cond.parent_live;
                        // After the skipped branch, which of the rest is taken is unknown.
                        cond.branch = if name == "else" {
                            Branch::One
                        } else {
                            Branch::Unknown
                        };
                    }
                    Branch::One => cond.live = false,
                    Branch::Unknown => cond.live = cond.parent_live,
                }
            }
        }
        "endif" => {
            conds.pop();
        }
        "define" if live => {
            let macro_len = rest
                .find(|c: char| !is_ident_continue(c))
                .unwrap_or(rest.len());
            let (macro_name, body) = rest.split_at(macro_len);
            if macro_name.is_empty() {
                return;
            }
            if body.starts_with('(') {
                macros.remove(macro_name);
                fn_macros.insert(macro_name.to_owned());
            } else {
                fn_macros.remove(macro_name);
                macros.insert(macro_name.to_owned(), lex_fragment(body, line, cpp));
            }
        }
        "undef" if live => {
            macros.remove(rest);
            fn_macros.remove(rest);
        }
        _ => {}
    }
}

/// Lexes a macro body: no directives, no expansion.
fn lex_fragment(text: &str, line: u32, cpp: bool) -> Vec<Token> {
    let source = Source::new(text, line);
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        skip_space(&source, &mut pos);
        if pos >= source.chars.len() {
            break;
        }
        tokens.push(raw_token(&source, &mut pos, cpp));
    }
    tokens
}

/// Pushes a token, expanding it if it names an object-like macro not already being expanded.
fn expand(
    token: Token,
    macros: &HashMap<String, Vec<Token>>,
    active: &mut Vec<String>,
    budget: &mut usize,
    out: &mut Vec<Token>,
) {
    let body = match &token.tok {
        Tok::Ident(name) if active.len() < MAX_EXPANSION_DEPTH && !active.contains(name) => {
            macros.get(name).filter(|body| body.len() <= *budget)
        }
        _ => None,
    };
    let (Some(body), Tok::Ident(name)) = (body, &token.tok) else {
        out.push(token);
        return;
    };
    *budget -= body.len();
    active.push(name.clone());
    for inner in body {
        let mut inner = inner.clone();
        inner.line = token.line;
        expand(inner, macros, active, budget, out);
    }
    active.pop();
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$' || !c.is_ascii()
}

fn is_ident_continue(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

/// Lexes the token at `pos`, which is not whitespace or a comment.
fn raw_token(source: &Source, pos: &mut usize, cpp: bool) -> Token {
    let line = source.line(*pos);
    let c = source.at(*pos).unwrap_or(' ');
    let tok = if is_ident_start(c) {
        let start = *pos;
        while source.at(*pos).is_some_and(is_ident_continue) {
            *pos += 1;
        }
        let ident: String = source.chars[start..*pos].iter().collect();
        match source.at(*pos) {
            Some('"') if cpp && matches!(ident.as_str(), "R" | "LR" | "uR" | "UR" | "u8R") => {
                raw_string(source, pos)
            }
            Some(quote @ ('"' | '\'')) if matches!(ident.as_str(), "L" | "u" | "U" | "u8") => {
                quoted(source, pos, quote)
            }
            _ => Tok::Ident(ident),
        }
    } else if c.is_ascii_digit()
        || (c == '.' && source.at(*pos + 1).is_some_and(|d| d.is_ascii_digit()))
    {
        let start = *pos;
        number(source, pos, cpp);
        Tok::Number(source.chars[start..*pos].iter().collect())
    } else if c == '"' || c == '\'' {
        quoted(source, pos, c)
    } else if source.starts_with(*pos, "::") {
        *pos += 2;
        Tok::Scope
    } else if source.starts_with(*pos, "->") {
        *pos += 2;
        Tok::Arrow
    } else if source.starts_with(*pos, "...") {
        *pos += 3;
        Tok::Ellipsis
    } else {
        *pos += 1;
        Tok::Punct(c)
    };
    Token { tok, line }
}

/// A pp-number: digits, letters, dots, exponent signs and (C++14) digit separators.
fn number(source: &Source, pos: &mut usize, cpp: bool) {
    while let Some(c) = source.at(*pos) {
        let previous = if *pos > 0 { source.at(*pos - 1) } else { None };
        let next_alnum = source
            .at(*pos + 1)
            .is_some_and(|next| next.is_ascii_alphanumeric());
        let continues = c.is_ascii_alphanumeric()
            || c == '_'
            || c == '.'
            || (cpp && c == '\'' && next_alnum)
            || ((c == '+' || c == '-') && matches!(previous, Some('e' | 'E' | 'p' | 'P')));
        if !continues {
            break;
        }
        *pos += 1;
    }
}

/// A string or character literal starting at its quote; an unterminated one ends with its line,
/// as the compiler would end it.
fn quoted(source: &Source, pos: &mut usize, quote: char) -> Tok {
    *pos += 1;
    let mut text = String::new();
    while let Some(c) = source.at(*pos) {
        if c == '\n' {
            break;
        }
        *pos += 1;
        if c == '\\' {
            text.push(c);
            if let Some(next) = source.at(*pos).filter(|&next| next != '\n') {
                text.push(next);
                *pos += 1;
            }
            continue;
        }
        if c == quote {
            break;
        }
        text.push(c);
    }
    if quote == '"' {
        Tok::Str(text)
    } else {
        Tok::CharLit
    }
}

/// A C++ raw string `R"delim( … )delim"` starting at its quote.
fn raw_string(source: &Source, pos: &mut usize) -> Tok {
    let start = *pos;
    *pos += 1;
    let mut delimiter = String::new();
    while let Some(c) = source.at(*pos) {
        if c == '(' {
            break;
        }
        if delimiter.len() >= 16 || c.is_whitespace() || c == ')' || c == '\\' || c == '"' {
            // Not a raw string after all; read it as an ordinary one.
            *pos = start;
            return quoted(source, pos, '"');
        }
        delimiter.push(c);
        *pos += 1;
    }
    *pos += 1;
    let end = format!("){delimiter}\"");
    let body_start = *pos;
    while *pos < source.chars.len() && !source.starts_with(*pos, &end) {
        *pos += 1;
    }
    let text: String = source.chars[body_start.min(*pos)..*pos].iter().collect();
    *pos = (*pos + end.chars().count()).min(source.chars.len());
    Tok::Str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(text: &str, cpp: bool) -> Vec<String> {
        lex(text, cpp)
            .tokens
            .iter()
            .map(|token| match &token.tok {
                Tok::Ident(ident) => ident.clone(),
                Tok::Str(text) => format!("\"{text}\""),
                Tok::CharLit => "'c'".to_owned(),
                Tok::Number(text) => text.clone(),
                Tok::Scope => "::".to_owned(),
                Tok::Arrow => "->".to_owned(),
                Tok::Ellipsis => "...".to_owned(),
                Tok::Punct(c) => c.to_string(),
                Tok::Block => "{}".to_owned(),
            })
            .collect()
    }

    #[test]
    fn comments_and_literals_are_single_tokens() {
        let text = "int /* ( */ a = ')'; // {\nchar *s = \"{(\\\"\";";
        assert_eq!(
            idents(text, false),
            [
                "int",
                "a",
                "=",
                "'c'",
                ";",
                "char",
                "*",
                "s",
                "=",
                "\"{(\\\"\"",
                ";"
            ]
        );
    }

    #[test]
    fn raw_strings_and_digit_separators_in_cpp() {
        let text = "auto s = R\"x()\" { )x\"; int n = 1'000'000;";
        assert_eq!(
            idents(text, true),
            [
                "auto",
                "s",
                "=",
                "\")\" { \"",
                ";",
                "int",
                "n",
                "=",
                "1'000'000",
                ";"
            ]
        );
    }

    #[test]
    fn directives_are_dropped_and_object_macros_expanded() {
        let text =
            "#include <stdio.h>\n#define API static \\\n  inline\n#define F(x) x\nAPI int f();\n";
        let lexed = lex(text, false);
        assert!(lexed.fn_macros.contains("F"));
        assert_eq!(
            idents(text, false),
            ["static", "inline", "int", "f", "(", ")", ";"]
        );
        assert_eq!(lexed.tokens[2].line, 5);
    }

    #[test]
    fn if_zero_groups_are_skipped() {
        let text = "#if 0\nint a;\n#else\nint b;\n#endif\n#if 1\nint c;\n#else\nint d;\n#endif\n#ifdef X\nint e;\n#else\nint f;\n#endif\n";
        assert_eq!(
            idents(text, false),
            ["int", "b", ";", "int", "c", ";", "int", "e", ";", "int", "f", ";"]
        );
    }

    #[test]
    fn self_referential_macros_terminate() {
        let text = "#define a b\n#define b a\nx a y";
        assert_eq!(idents(text, false), ["x", "a", "y"]);
    }
}
