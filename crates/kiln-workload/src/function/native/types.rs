//! Reading a C or C++ type from its tokens: which JSON value it maps to, if any.
//!
//! A declarator is split into its name and its type; file-scope aliases are expanded; the base
//! words (`unsigned long long`, `std::string`, `size_t`) and the pointer and reference layers
//! around them decide the [`NativeKind`], or why there is none.

use std::collections::HashMap;

use super::decl::{skip_group, TAGS, TYPE_KEYWORDS, TYPE_OPERATORS};
use super::lex::{Tok, Token};
use super::{FloatKind, NativeKind, NativeType};

/// What type parsing needs to know about the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct TypeContext<'a> {
    pub cpp: bool,
    pub aliases: &'a HashMap<String, Vec<Token>>,
    pub using_std: bool,
}

/// Whether a type is a parameter's or the return type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Param,
    Return,
}

/// Spells tokens back as C, for messages: `const char *`, `std::string const &`.
pub(super) fn spell(tokens: &[Token]) -> String {
    let mut out = String::new();
    let mut previous: Option<&Tok> = None;
    for token in tokens {
        let text = match &token.tok {
            Tok::Ident(ident) => ident.clone(),
            Tok::Str(text) => format!("\"{text}\""),
            Tok::CharLit => "'…'".to_owned(),
            Tok::Number(text) => text.clone(),
            Tok::Scope => "::".to_owned(),
            Tok::Arrow => "->".to_owned(),
            Tok::Ellipsis => "...".to_owned(),
            Tok::Punct(c) => c.to_string(),
            Tok::Block => "{…}".to_owned(),
        };
        let glued = matches!(
            (previous, &token.tok),
            (None, _)
                | (Some(Tok::Scope), _)
                | (_, Tok::Scope)
                | (_, Tok::Punct(',' | ')' | ']' | '>' | '[' | '(' | '<'))
                | (Some(Tok::Punct('(' | '[' | '<')), _)
                | (
                    Some(Tok::Punct('*' | '&')),
                    Tok::Punct('*' | '&') | Tok::Ident(_)
                )
        );
        if !glued {
            out.push(' ');
        }
        out.push_str(&text);
        previous = Some(&token.tok);
    }
    out
}

/// Integer typedefs of the C library, as (signed, bits) on the LP64 targets Kiln runs on.
fn library_integer(name: &str) -> Option<(bool, u8)> {
    Some(match name {
        "int8_t" => (true, 8),
        "int16_t" => (true, 16),
        "int32_t" => (true, 32),
        "int64_t" | "ssize_t" | "ptrdiff_t" | "intptr_t" | "intmax_t" | "off_t" => (true, 64),
        "uint8_t" => (false, 8),
        "uint16_t" => (false, 16),
        "uint32_t" => (false, 32),
        "uint64_t" | "size_t" | "uintptr_t" | "uintmax_t" => (false, 64),
        _ => return None,
    })
}

/// Reads a declarator's name and type: `const char *name`, `unsigned long long`,
/// `const std::string &s`. Unsupported types come back as the reason.
pub(super) fn parse_type(
    tokens: &[Token],
    role: Role,
    context: TypeContext<'_>,
) -> (Option<String>, Result<NativeType, String>) {
    let (name, type_tokens) = split_name(tokens);
    let spelling = spell(type_tokens);
    let unsupported = |why: &str| Err(format!("'{spelling}' {why}"));
    if type_tokens.iter().any(|token| {
        token
            .ident()
            .is_some_and(|word| TYPE_OPERATORS.contains(&word))
    }) {
        return (
            name,
            unsupported("is a computed type, which no JSON value maps to"),
        );
    }
    if type_tokens.iter().any(|token| token.is_punct('(')) {
        return (name, unsupported("is a function pointer"));
    }
    if tokens.iter().any(|token| token.is_punct('[')) {
        return (name, unsupported("is an array"));
    }
    let expanded = match expand_aliases(type_tokens, context, 0) {
        Ok(expanded) => expanded,
        Err(why) => return (name, Err(why)),
    };
    (
        name,
        classify(&expanded, role, context).map_or_else(
            |why| unsupported(&why),
            |kind| {
                Ok(NativeType {
                    kind,
                    spelling: spelling.clone(),
                })
            },
        ),
    )
}

/// Splits a parameter's declarator name off its type. The last identifier is the name when it
/// is not a type keyword, not part of a qualified name, and something before it says what the
/// type is (`size_t` alone is an unnamed parameter; `size_t n` is `n`).
fn split_name(tokens: &[Token]) -> (Option<String>, &[Token]) {
    // A function pointer's name is inside its parentheses: `int (*cb)(int)`.
    if let Some(open) = tokens.iter().position(|token| token.is_punct('(')) {
        let close = skip_group(tokens, open, '(', ')');
        let name = tokens[open..close]
            .iter()
            .rev()
            .find_map(|token| token.ident().map(str::to_owned));
        return (name, tokens);
    }
    let end = tokens
        .iter()
        .position(|token| token.is_punct('['))
        .unwrap_or(tokens.len());
    let Some((last, before)) = tokens[..end].split_last() else {
        return (None, &tokens[..end]);
    };
    let Some(word) = last.ident() else {
        return (None, &tokens[..end]);
    };
    let qualified = before.last().is_some_and(|token| token.tok == Tok::Scope);
    let keyword = TYPE_KEYWORDS.contains(&word) || word == "const" || word == "volatile";
    let typed_before = before.iter().any(|token| match &token.tok {
        Tok::Ident(w) => {
            !matches!(w.as_str(), "const" | "volatile" | "register") && !TAGS.contains(&w.as_str())
        }
        Tok::Punct('*' | '&') | Tok::Punct('>') => true,
        _ => false,
    });
    let tagged = before
        .last()
        .and_then(Token::ident)
        .is_some_and(|w| TAGS.contains(&w));
    if qualified || keyword || !typed_before || tagged {
        return (None, &tokens[..end]);
    }
    (Some(word.to_owned()), before)
}

/// Replaces file-scope aliases by what they alias (not after `::`, where a name is a member).
fn expand_aliases(
    tokens: &[Token],
    context: TypeContext<'_>,
    depth: usize,
) -> Result<Vec<Token>, String> {
    if depth > 16 {
        return Err(format!("'{}' is an alias nested too deep", spell(tokens)));
    }
    let mut out = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let after_scope = index > 0 && tokens[index - 1].tok == Tok::Scope;
        match token.ident().and_then(|word| context.aliases.get(word)) {
            Some(aliased) if !after_scope => {
                out.extend(expand_aliases(aliased, context, depth + 1)?);
            }
            _ => out.push(token.clone()),
        }
    }
    Ok(out)
}

/// Classifies a type's tokens (aliases expanded, no name).
fn classify(tokens: &[Token], role: Role, context: TypeContext<'_>) -> Result<NativeKind, String> {
    let mut words: Vec<String> = Vec::new();
    let mut base_const = false;
    let mut pointers = 0usize;
    let mut references = 0usize;
    let mut joining = false;
    for token in tokens {
        match &token.tok {
            Tok::Ident(word) if word == "const" => {
                if pointers == 0 && references == 0 {
                    base_const = true;
                }
            }
            Tok::Ident(word)
                if matches!(
                    word.as_str(),
                    "volatile"
                        | "restrict"
                        | "__restrict"
                        | "__restrict__"
                        | "register"
                        | "typename"
                ) => {}
            Tok::Ident(word) if TAGS.contains(&word.as_str()) => {
                return Err(format!("is a {word}, which no JSON value maps to"));
            }
            Tok::Ident(word) => {
                if pointers > 0 || references > 0 {
                    return Err("is not a type this parser understands".to_owned());
                }
                match words.last_mut() {
                    Some(last) if joining => {
                        last.push_str("::");
                        last.push_str(word);
                    }
                    _ => words.push(word.clone()),
                }
                joining = false;
            }
            Tok::Scope => joining = !words.is_empty(),
            Tok::Punct('*') => pointers += 1,
            Tok::Punct('&') => references += 1,
            Tok::Punct('<') => return Err("is a template type, which no JSON value maps to".into()),
            Tok::Block => return Err("is a struct, which no JSON value maps to".to_owned()),
            _ => return Err("is not a type this parser understands".to_owned()),
        }
    }
    let base = base_kind(&words, context)?;
    match (pointers, references) {
        (0, 0) if base == NativeKind::Void && role == Role::Param => {
            Err("is void, which a parameter cannot be".to_owned())
        }
        (0, 0) => Ok(base),
        (1, 0) if base == NativeKind::Char => Ok(NativeKind::CString),
        (0, 1)
            if context.cpp && base != NativeKind::Void && (base_const || role == Role::Return) =>
        {
            Ok(base)
        }
        (0, 1) => Err("is a non-const reference; only const references can be passed".to_owned()),
        (0, _) => Err("is an rvalue reference, which no JSON value maps to".to_owned()),
        _ => Err(
            "is a pointer; the only pointers passed are char * strings (and a NULL char * \
             returned is null)"
                .to_owned(),
        ),
    }
}

/// The kind of a type's base words: builtin keywords, or one (qualified) name.
fn base_kind(words: &[String], context: TypeContext<'_>) -> Result<NativeKind, String> {
    let unknown = || Err("is not a type with a JSON mapping".to_owned());
    if let [name] = words {
        if !TYPE_KEYWORDS.contains(&name.as_str()) {
            let unqualified = name.strip_prefix("::").unwrap_or(name);
            let std_name = unqualified.strip_prefix("std::");
            if context.cpp {
                let candidate = std_name.or(context.using_std.then_some(unqualified));
                if matches!(candidate, Some("string" | "string_view")) {
                    return Ok(NativeKind::StdString);
                }
            }
            let library = if context.cpp {
                std_name.unwrap_or(unqualified)
            } else {
                unqualified
            };
            if let Some((signed, bits)) = library_integer(library) {
                return Ok(NativeKind::Int { signed, bits });
            }
            return unknown();
        }
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in words {
        if !TYPE_KEYWORDS.contains(&word.as_str()) {
            return unknown();
        }
        let word = if word == "__signed__" {
            "signed"
        } else {
            word.as_str()
        };
        *counts.entry(word).or_default() += 1;
    }
    let count = |word: &str| counts.get(word).copied().unwrap_or(0);
    let repeated = counts.iter().any(|(word, &n)| n > 1 && *word != "long");
    if words.is_empty() || repeated || count("long") > 2 || count("signed") + count("unsigned") > 1
    {
        return unknown();
    }
    let signed = count("unsigned") == 0;
    let mut main: Vec<&str> = counts
        .keys()
        .copied()
        .filter(|word| !matches!(*word, "signed" | "unsigned" | "long" | "short" | "int"))
        .collect();
    main.sort_unstable();
    let alone = counts.len() == 1;
    Ok(match main.as_slice() {
        [] if count("short") == 1 && count("long") == 0 => NativeKind::Int { signed, bits: 16 },
        [] if count("short") == 0 && count("long") > 0 => NativeKind::Int { signed, bits: 64 },
        [] if count("short") == 0 => NativeKind::Int { signed, bits: 32 },
        ["void"] if alone => NativeKind::Void,
        ["bool" | "_Bool"] if alone => NativeKind::Bool,
        ["float"] if alone => NativeKind::Float(FloatKind::Float),
        ["double"] if alone => NativeKind::Float(FloatKind::Double),
        ["double"] if counts.len() == 2 && count("long") == 1 => {
            NativeKind::Float(FloatKind::LongDouble)
        }
        // Plain char is a character; signed and unsigned char are small integers.
        ["char"] if counts.len() == 1 => NativeKind::Char,
        ["char"] if counts.len() == 2 && count("signed") + count("unsigned") == 1 => {
            NativeKind::Int { signed, bits: 8 }
        }
        _ => return unknown(),
    })
}
