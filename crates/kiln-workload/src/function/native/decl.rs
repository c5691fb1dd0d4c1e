//! Finding a function's declarations at file scope and reading their types.
//!
//! The file's tokens are split into file-scope statements. `extern "C" { … }` and
//! `namespace n { … }` blocks are entered (their contents are file scope too, the namespace
//! qualifying the name); every other block (a function body, a struct, an initializer) is
//! skipped whole. A statement that reads `… name ( … ) …` and ends in a body is a definition;
//! one that ends in `;` is a prototype. `typedef`s and `using` aliases at file scope are kept,
//! so that `typedef unsigned long long u64;` makes `u64` an integer type.

use std::collections::HashMap;

use super::lex::{Lexed, Tok, Token};
use super::types::{parse_type, Role, TypeContext};
use super::NativeType;

/// A function declaration or definition at file scope.
#[derive(Debug, Clone)]
pub(super) struct Decl {
    /// Its unqualified name.
    pub name: String,
    /// The qualifiers written before the name (`ns::f` out of line), outermost first.
    pub qualifiers: Vec<String>,
    /// The named namespaces around it, outermost first.
    pub scope: Vec<String>,
    /// Whether it is a template (or a specialization of one).
    pub template: bool,
    /// Whether it has a body.
    pub definition: bool,
    /// Whether the declarator is more than `name(params)` (a function returning a function
    /// pointer, say), which no JSON value maps to.
    pub complex: bool,
    /// Its line.
    pub line: u32,
    /// The tokens before the name, attributes removed.
    pub prefix: Vec<Token>,
    /// The tokens between the parameter list's parentheses.
    pub params: Vec<Token>,
    /// The tokens after the parameter list.
    pub suffix: Vec<Token>,
}

impl Decl {
    /// The name with its namespaces and qualifiers, `a::b::f`.
    pub fn full_name(&self) -> String {
        let mut parts: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        parts.extend(self.qualifiers.iter().map(String::as_str));
        parts.push(&self.name);
        parts.join("::")
    }
}

/// What a scan of a file found.
#[derive(Debug, Default)]
pub(super) struct Scanned {
    /// Function declarations and definitions, in order.
    pub decls: Vec<Decl>,
    /// File-scope type aliases: name → the aliased type's tokens.
    pub aliases: HashMap<String, Vec<Token>>,
    /// Whether `std::` names may be written unqualified (`using namespace std;` or
    /// `using std::string;`).
    pub using_std: bool,
}

/// Keywords that are followed by parentheses but are not a function's name.
const NOT_NAMES: &[&str] = &[
    "if",
    "while",
    "for",
    "switch",
    "return",
    "catch",
    "static_assert",
    "_Static_assert",
    "_Generic",
    "operator",
    "requires",
];

/// Type operators whose parenthesized operand is part of a type.
pub(super) const TYPE_OPERATORS: &[&str] = &[
    "decltype",
    "typeof",
    "__typeof__",
    "__typeof",
    "sizeof",
    "alignof",
    "_Alignof",
    "__alignof__",
    "_Atomic",
];

/// Attribute-like keywords, dropped with their parenthesized argument if any.
const ATTRIBUTES: &[&str] = &[
    "__attribute__",
    "__attribute",
    "__declspec",
    "alignas",
    "_Alignas",
    "__asm__",
    "__asm",
    "asm",
    "_Pragma",
    "noexcept",
    "throw",
    "__extension__",
];

/// Specifiers in front of a declaration that say nothing about its type.
const SPECIFIERS: &[&str] = &[
    "static",
    "inline",
    "__inline",
    "__inline__",
    "extern",
    "constexpr",
    "consteval",
    "virtual",
    "explicit",
    "friend",
    "_Noreturn",
    "noreturn",
    "register",
    "thread_local",
    "_Thread_local",
    "__thread",
];

/// Keywords that make up builtin arithmetic and void types.
pub(super) const TYPE_KEYWORDS: &[&str] = &[
    "void",
    "char",
    "short",
    "int",
    "long",
    "signed",
    "unsigned",
    "float",
    "double",
    "bool",
    "_Bool",
    "__signed__",
    "__int128",
    "wchar_t",
    "char8_t",
    "char16_t",
    "char32_t",
    "auto",
];

/// The tag keywords of user-defined types.
pub(super) const TAGS: &[&str] = &["struct", "union", "enum", "class"];

/// Scans a file for its file-scope declarations.
pub(super) fn scan(lexed: &Lexed, cpp: bool) -> Scanned {
    let tokens = &lexed.tokens;
    let mut scanned = Scanned::default();
    // One entry per entered block: the namespace names it adds (none for `extern "C"`).
    let mut scopes: Vec<Vec<String>> = Vec::new();
    let mut statement: Vec<Token> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        match token.tok {
            Tok::Punct('(' | '[') => {
                depth += 1;
                statement.push(token.clone());
            }
            Tok::Punct(')' | ']') => {
                depth = depth.saturating_sub(1);
                statement.push(token.clone());
            }
            Tok::Punct(';') if depth == 0 => {
                finish_statement(&statement, &scopes, lexed, cpp, &mut scanned);
                statement.clear();
            }
            Tok::Punct('}') if depth == 0 => {
                // The end of an entered block (a stray brace is ignored).
                scopes.pop();
                statement.clear();
            }
            Tok::Punct('{') => {
                if depth == 0 {
                    if let Some(names) = entered_block(&statement, cpp) {
                        scopes.push(names);
                        statement.clear();
                        i += 1;
                        continue;
                    }
                }
                let after = skip_block(tokens, i);
                if depth == 0 && !is_type_body_or_initializer(&statement, lexed) {
                    if let Some(decl) = split_header(&statement, &scopes, lexed, true) {
                        scanned.decls.push(decl);
                    }
                    statement.clear();
                } else {
                    statement.push(Token {
                        tok: Tok::Block,
                        line: token.line,
                    });
                }
                i = after;
                continue;
            }
            _ => statement.push(token.clone()),
        }
        i += 1;
    }
    scanned
}

/// The index after the block whose `{` is at `open`.
fn skip_block(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (offset, token) in tokens[open..].iter().enumerate() {
        match token.tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return open + offset + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Whether a block opened after these tokens is entered: `extern "C" {` (`extern "C++"`), or
/// `namespace [a[::b]] {`; the namespace names it adds.
fn entered_block(statement: &[Token], cpp: bool) -> Option<Vec<String>> {
    let cleaned = strip_attributes(statement);
    match cleaned.as_slice() {
        [extern_, lang] if extern_.is_ident("extern") && matches!(lang.tok, Tok::Str(_)) => {
            Some(Vec::new())
        }
        [first, rest @ ..] if cpp && (first.is_ident("namespace") || first.is_ident("inline")) => {
            let rest = if first.is_ident("inline") {
                match rest {
                    [namespace, rest @ ..] if namespace.is_ident("namespace") => rest,
                    _ => return None,
                }
            } else {
                rest
            };
            let mut names = Vec::new();
            for (index, token) in rest.iter().enumerate() {
                match (&token.tok, index % 2) {
                    (Tok::Ident(name), 0) if name != "inline" => names.push(name.clone()),
                    (Tok::Ident(name), 0) if name == "inline" => {}
                    (Tok::Scope, 1) => {}
                    _ => return None,
                }
            }
            Some(names)
        }
        _ => None,
    }
}

/// Whether a `{` after these tokens opens a type's body or an initializer (the statement goes
/// on after it) rather than a function's body (the statement ends with it).
fn is_type_body_or_initializer(statement: &[Token], lexed: &Lexed) -> bool {
    let cleaned = strip_leading_macros(&strip_attributes(statement), lexed);
    let mut depth = 0usize;
    let mut angles = 0usize;
    let mut tag_open = false;
    for (index, token) in cleaned.iter().enumerate() {
        let after_ident = index > 0 && cleaned[index - 1].ident().is_some();
        match &token.tok {
            Tok::Punct('(' | '[') => {
                depth += 1;
                if depth == 1 && angles == 0 {
                    tag_open = false;
                }
            }
            Tok::Punct(')' | ']') => depth = depth.saturating_sub(1),
            Tok::Punct('<') if depth == 0 && after_ident => angles += 1,
            Tok::Punct('>') if depth == 0 && angles > 0 => angles -= 1,
            Tok::Punct('=') if depth == 0 && angles == 0 => return true,
            Tok::Ident(word) if depth == 0 && angles == 0 && TAGS.contains(&word.as_str()) => {
                tag_open = true;
            }
            _ => {}
        }
    }
    tag_open
}

/// Ends a file-scope statement that ended in `;`: a prototype, a type alias or a using
/// directive.
fn finish_statement(
    statement: &[Token],
    scopes: &[Vec<String>],
    lexed: &Lexed,
    cpp: bool,
    scanned: &mut Scanned,
) {
    let Some(first) = statement.first() else {
        return;
    };
    if first.is_ident("typedef") {
        let cleaned = strip_attributes(&statement[1..]);
        let simple = !cleaned
            .iter()
            .any(|token| token.is_punct(',') || token.is_punct('('));
        if let (true, Some((last, aliased))) = (simple, cleaned.split_last()) {
            if let Some(name) = last.ident() {
                scanned.aliases.insert(name.to_owned(), aliased.to_vec());
            }
        }
        return;
    }
    if cpp && first.is_ident("using") {
        match &statement[1..] {
            [namespace, std] if namespace.is_ident("namespace") && std.is_ident("std") => {
                scanned.using_std = true;
            }
            [std, scope, ..] if std.is_ident("std") && scope.tok == Tok::Scope => {
                scanned.using_std = true;
            }
            [name, equals, aliased @ ..] if equals.is_punct('=') => {
                if let Some(name) = name.ident() {
                    scanned
                        .aliases
                        .insert(name.to_owned(), strip_attributes(aliased));
                }
            }
            _ => {}
        }
        return;
    }
    if let Some(decl) = split_header(statement, scopes, lexed, false) {
        scanned.decls.push(decl);
    }
}

/// Removes attributes (`__attribute__((…))`, `[[…]]`, `alignas(…)`, `noexcept(…)`, asm
/// labels and the like) wherever they are.
fn strip_attributes(tokens: &[Token]) -> Vec<Token> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if token.ident().is_some_and(|word| ATTRIBUTES.contains(&word)) {
            i += 1;
            if tokens.get(i).is_some_and(|next| next.is_punct('(')) {
                i = skip_group(tokens, i, '(', ')');
            }
            continue;
        }
        if token.is_punct('[') && tokens.get(i + 1).is_some_and(|next| next.is_punct('[')) {
            i = skip_group(tokens, i, '[', ']');
            continue;
        }
        out.push(token.clone());
        i += 1;
    }
    out
}

/// Drops invocations of function-like macros in front of a declaration (`EXPORT(int) f` is
/// beyond reach, but `MODULE_INIT(x)\nint f(…)` is common).
fn strip_leading_macros(tokens: &[Token], lexed: &Lexed) -> Vec<Token> {
    let mut start = 0;
    while let Some(name) = tokens.get(start).and_then(Token::ident) {
        if !lexed.fn_macros.contains(name)
            || !tokens.get(start + 1).is_some_and(|next| next.is_punct('('))
        {
            break;
        }
        start = skip_group(tokens, start + 1, '(', ')');
    }
    tokens[start.min(tokens.len())..].to_vec()
}

/// The index after the balanced group whose opener is at `open`.
pub(super) fn skip_group(tokens: &[Token], open: usize, opener: char, closer: char) -> usize {
    let mut depth = 0usize;
    for (offset, token) in tokens[open..].iter().enumerate() {
        if token.is_punct(opener) {
            depth += 1;
        } else if token.is_punct(closer) {
            depth -= 1;
            if depth == 0 {
                return open + offset + 1;
            }
        }
    }
    tokens.len()
}

/// The index after the `<…>` group whose `<` is at `open` (parentheses inside are skipped).
fn skip_angles(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < tokens.len() {
        let token = &tokens[i];
        if token.is_punct('(') {
            i = skip_group(tokens, i, '(', ')');
            continue;
        }
        if token.is_punct('<') {
            depth += 1;
        } else if token.is_punct('>') {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    tokens.len()
}

/// Reads a statement as a function header `prefix name ( params ) suffix`, if it is one.
fn split_header(
    statement: &[Token],
    scopes: &[Vec<String>],
    lexed: &Lexed,
    definition: bool,
) -> Option<Decl> {
    let mut tokens = strip_leading_macros(&strip_attributes(statement), lexed);
    let mut template = false;
    // `extern "C++" template<…>` and `template<…>` (possibly nested) before the declaration.
    while let Some(position) = tokens.iter().position(|token| token.is_ident("template")) {
        let leading = tokens[..position]
            .iter()
            .all(|token| token.is_ident("extern") || matches!(token.tok, Tok::Str(_)));
        if !leading {
            break;
        }
        template = true;
        let after = if tokens.get(position + 1).is_some_and(|t| t.is_punct('<')) {
            skip_angles(&tokens, position + 1)
        } else {
            position + 1
        };
        tokens.drain(position..after);
    }
    let line = tokens.first()?.line;
    let mut angles = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let previous = i.checked_sub(1).map(|p| &tokens[p]);
        if token.is_punct('=') && angles == 0 {
            return None;
        }
        if token.is_punct('<') && previous.is_some_and(|p| p.ident().is_some()) {
            angles += 1;
        } else if token.is_punct('>') && angles > 0 {
            angles -= 1;
        } else if token.is_punct('[') {
            i = skip_group(&tokens, i, '[', ']');
            continue;
        } else if token.is_punct('(') && angles == 0 {
            let close = skip_group(&tokens, i, '(', ')');
            match previous.map(|p| &p.tok) {
                Some(Tok::Ident(word)) if TYPE_OPERATORS.contains(&word.as_str()) => {
                    i = close;
                    continue;
                }
                Some(Tok::Ident(word))
                    if NOT_NAMES.contains(&word.as_str())
                        || TYPE_KEYWORDS.contains(&word.as_str())
                        || SPECIFIERS.contains(&word.as_str()) =>
                {
                    return complex_header(&tokens, i, close, scopes, template, definition);
                }
                Some(Tok::Ident(name)) => {
                    let mut start = i - 1;
                    let mut qualifiers = Vec::new();
                    while start >= 2 && tokens[start - 1].tok == Tok::Scope {
                        let Some(qualifier) = tokens[start - 2].ident() else {
                            break;
                        };
                        qualifiers.insert(0, qualifier.to_owned());
                        start -= 2;
                    }
                    if start >= 1 && tokens[start - 1].is_punct('~') {
                        return None;
                    }
                    return Some(Decl {
                        name: name.clone(),
                        qualifiers,
                        scope: scopes.concat(),
                        template,
                        definition,
                        complex: false,
                        line,
                        prefix: tokens[..start].to_vec(),
                        params: tokens[i + 1..close.saturating_sub(1).max(i + 1)].to_vec(),
                        suffix: tokens[close.min(tokens.len())..].to_vec(),
                    });
                }
                Some(Tok::Punct('>')) => {
                    // `f<int>(…)`: an explicit specialization; find the template's name.
                    let name = tokens[..i]
                        .iter()
                        .rev()
                        .skip_while(|t| t.ident().is_none() || t.is_ident("template"))
                        .find_map(|t| t.ident().filter(|w| !TYPE_KEYWORDS.contains(w)))?;
                    return Some(Decl {
                        name: name.to_owned(),
                        qualifiers: Vec::new(),
                        scope: scopes.concat(),
                        template: true,
                        definition,
                        complex: false,
                        line,
                        prefix: Vec::new(),
                        params: Vec::new(),
                        suffix: Vec::new(),
                    });
                }
                _ => return complex_header(&tokens, i, close, scopes, template, definition),
            }
        }
        i += 1;
    }
    None
}

/// A header whose first parenthesized group is not the parameter list, as in
/// `int (*f(int))(int)`: its name is the identifier followed by `(` inside that group.
fn complex_header(
    tokens: &[Token],
    open: usize,
    close: usize,
    scopes: &[Vec<String>],
    template: bool,
    definition: bool,
) -> Option<Decl> {
    let inner = &tokens[open + 1..close.saturating_sub(1).max(open + 1)];
    let name = inner.windows(2).find_map(|pair| {
        let name = pair[0].ident()?;
        (pair[1].is_punct('(') && !TYPE_OPERATORS.contains(&name) && !NOT_NAMES.contains(&name))
            .then(|| name.to_owned())
    })?;
    Some(Decl {
        name,
        qualifiers: Vec::new(),
        scope: scopes.concat(),
        template,
        definition,
        complex: true,
        line: tokens.first().map_or(1, |t| t.line),
        prefix: tokens[..open].to_vec(),
        params: Vec::new(),
        suffix: Vec::new(),
    })
}

/// A parameter read from a declaration.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ParsedParam {
    /// Its name, if the declaration gives one.
    pub name: Option<String>,
    /// Its type, or why it is not supported.
    pub ty: Result<NativeType, String>,
    /// Whether the declaration gives it a (C++) default argument.
    pub has_default: bool,
}

/// A function's types read from a declaration.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ParsedFn {
    /// The return type, or why it is not supported.
    pub returns: Result<NativeType, String>,
    /// The parameters.
    pub params: Vec<ParsedParam>,
    /// Whether it takes `...`.
    pub variadic: bool,
}

/// Reads a declaration's return and parameter types.
pub(super) fn parse_decl(decl: &Decl, context: TypeContext<'_>) -> ParsedFn {
    if decl.complex {
        return ParsedFn {
            returns: Err(format!(
                "'{}' returns a function pointer or another type no JSON value maps to",
                decl.name
            )),
            params: Vec::new(),
            variadic: false,
        };
    }
    let prefix: Vec<Token> = decl
        .prefix
        .iter()
        .filter(|token| {
            !matches!(token.tok, Tok::Str(_))
                && !token.ident().is_some_and(|word| SPECIFIERS.contains(&word))
        })
        .cloned()
        .collect();
    let trailing = decl
        .suffix
        .iter()
        .position(|token| token.tok == Tok::Arrow)
        .map(|arrow| {
            decl.suffix[arrow + 1..]
                .iter()
                .filter(|token| !token.is_ident("override") && !token.is_ident("final"))
                .cloned()
                .collect::<Vec<_>>()
        });
    let return_tokens = match (&trailing, prefix.as_slice()) {
        (Some(trailing), [auto]) if auto.is_ident("auto") => trailing.clone(),
        _ => prefix,
    };
    let returns = if return_tokens.is_empty() {
        Err(format!("'{}' has no return type", decl.name))
    } else {
        parse_type(&return_tokens, Role::Return, context).1
    };
    let mut params = Vec::new();
    let mut variadic = false;
    let pieces = split_params(&decl.params);
    let only_void = matches!(pieces.as_slice(), [[only]] if only.is_ident("void"));
    if !only_void {
        for piece in pieces {
            if matches!(piece, [only] if only.tok == Tok::Ellipsis) {
                variadic = true;
                continue;
            }
            let (declarator, has_default) = match piece.iter().position(|token| token.is_punct('='))
            {
                Some(equals) => (&piece[..equals], true),
                None => (piece, false),
            };
            let (name, ty) = parse_type(declarator, Role::Param, context);
            params.push(ParsedParam {
                name,
                ty,
                has_default,
            });
        }
    }
    ParsedFn {
        returns,
        params,
        variadic,
    }
}

/// Splits a parameter list at its top-level commas (not those inside `()`, `[]`, `{}` or a
/// template's `<>`).
fn split_params(tokens: &[Token]) -> Vec<&[Token]> {
    let mut pieces = Vec::new();
    if tokens.is_empty() {
        return pieces;
    }
    let mut depth = 0usize;
    let mut angles = 0usize;
    let mut start = 0;
    for (index, token) in tokens.iter().enumerate() {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth = depth.saturating_sub(1),
            Tok::Punct('<') if index > 0 && tokens[index - 1].ident().is_some() => angles += 1,
            Tok::Punct('>') if angles > 0 => angles -= 1,
            Tok::Punct(',') if depth == 0 && angles == 0 => {
                pieces.push(&tokens[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&tokens[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::super::lex::lex;
    use super::super::types::spell;
    use super::super::{FloatKind, NativeKind};
    use super::*;

    fn decls(code: &str, cpp: bool) -> Vec<Decl> {
        scan(&lex(code, cpp), cpp).decls
    }

    fn kinds(code: &str, cpp: bool, name: &str) -> ParsedFn {
        let lexed = lex(code, cpp);
        let scanned = scan(&lexed, cpp);
        let decl = scanned
            .decls
            .iter()
            .rev()
            .find(|decl| decl.name == name)
            .expect("the function is found");
        parse_decl(
            decl,
            TypeContext {
                cpp,
                aliases: &scanned.aliases,
                using_std: scanned.using_std,
            },
        )
    }

    #[test]
    fn statements_split_at_file_scope_only() {
        let code = "struct point { int x; int f(int); };\n\
                    int arr[] = {1, 2};\n\
                    static int helper(int a) { if (a) { return 1; } return 0; }\n\
                    int add(int a, int b);\n\
                    int add(int a, int b) { return a + b; }\n";
        let found: Vec<(String, bool)> = decls(code, false)
            .into_iter()
            .map(|decl| (decl.name, decl.definition))
            .collect();
        assert_eq!(
            found,
            [
                ("helper".to_owned(), true),
                ("add".to_owned(), false),
                ("add".to_owned(), true)
            ]
        );
    }

    #[test]
    fn namespaces_and_linkage_blocks_are_entered() {
        let code = "extern \"C\" { int a(void) { return 1; } }\n\
                    namespace outer { namespace { int b() { return 2; } } int c() { return 3; } }\n\
                    namespace x::y { int d() { return 4; } }\n\
                    class K { int e() { return 5; } };\n";
        let found: Vec<String> = decls(code, true).iter().map(Decl::full_name).collect();
        assert_eq!(found, ["a", "outer::b", "outer::c", "x::y::d"]);
    }

    #[test]
    fn a_function_returning_a_struct_ends_its_statement() {
        let code = "struct p make(int x) { struct p r; return r; }\nint after(int y) { return y; }";
        let found: Vec<String> = decls(code, false).into_iter().map(|d| d.name).collect();
        assert_eq!(found, ["make", "after"]);
    }

    #[test]
    fn templates_are_marked() {
        let code = "template <typename T> T twice(T v) { return v + v; }\n\
                    template <> int twice<int>(int v) { return 2 * v; }";
        let found: Vec<(String, bool)> = decls(code, true)
            .into_iter()
            .map(|decl| (decl.name, decl.template))
            .collect();
        assert_eq!(
            found,
            [("twice".to_owned(), true), ("twice".to_owned(), true)]
        );
    }

    #[test]
    fn types_are_classified() {
        let parsed = kinds(
            "typedef unsigned long long u64;\n\
             static inline u64 f(unsigned a, signed char b, short int c, long d, \
             unsigned long long e, size_t g, int8_t h, uint16_t i, long double j, _Bool k, \
             char const* const l, char m, u64) { return 0; }",
            false,
            "f",
        );
        let found: Vec<(Option<String>, Result<NativeKind, String>)> = parsed
            .params
            .iter()
            .map(|p| (p.name.clone(), p.ty.clone().map(|t| t.kind)))
            .collect();
        let int = |signed, bits| Ok(NativeKind::Int { signed, bits });
        let named = |name: &str| Some(name.to_owned());
        assert_eq!(
            found,
            [
                (named("a"), int(false, 32)),
                (named("b"), int(true, 8)),
                (named("c"), int(true, 16)),
                (named("d"), int(true, 64)),
                (named("e"), int(false, 64)),
                (named("g"), int(false, 64)),
                (named("h"), int(true, 8)),
                (named("i"), int(false, 16)),
                (named("j"), Ok(NativeKind::Float(FloatKind::LongDouble))),
                (named("k"), Ok(NativeKind::Bool)),
                (named("l"), Ok(NativeKind::CString)),
                (named("m"), Ok(NativeKind::Char)),
                (None, int(false, 64)),
            ]
        );
        assert_eq!(parsed.returns.map(|t| t.spelling), Ok("u64".to_owned()));
    }

    #[test]
    fn cpp_strings_references_and_defaults() {
        let parsed = kinds(
            "#include <string>\nusing namespace std;\n\
             std::string f(const std::string& a, std::string_view b, string c, \
             const int &d, std::string &e, int g = 3) { return a; }",
            true,
            "f",
        );
        let found: Vec<(bool, bool)> = parsed
            .params
            .iter()
            .map(|p| (p.ty.is_ok(), p.has_default))
            .collect();
        assert_eq!(
            found,
            [
                (true, false),
                (true, false),
                (true, false),
                (true, false),
                (false, false),
                (true, true)
            ]
        );
        assert_eq!(
            parsed.params[0].ty.clone().map(|t| t.kind),
            Ok(NativeKind::StdString)
        );
        let error = parsed.params[4]
            .ty
            .clone()
            .expect_err("non-const reference");
        assert!(error.contains("non-const reference"), "{error}");
    }

    #[test]
    fn unsupported_types_say_why() {
        let parsed = kinds(
            "int f(struct point p, int *q, int r[3], void (*cb)(int), ...) { return 0; }",
            false,
            "f",
        );
        assert!(parsed.variadic);
        let reasons: Vec<String> = parsed
            .params
            .iter()
            .map(|p| p.ty.clone().expect_err("unsupported"))
            .collect();
        assert!(
            reasons[0].contains("'struct point' is a struct"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("'int *' is a pointer"), "{reasons:?}");
        assert!(reasons[2].contains("array"), "{reasons:?}");
        assert!(reasons[3].contains("function pointer"), "{reasons:?}");
        let names: Vec<Option<String>> = parsed.params.iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            names,
            [
                Some("p".to_owned()),
                Some("q".to_owned()),
                Some("r".to_owned()),
                Some("cb".to_owned())
            ]
        );
    }

    #[test]
    fn spelling_is_readable() {
        let lexed = lex("const char *const x; std::string const& y;", true);
        assert_eq!(spell(&lexed.tokens[..4]), "const char *const");
        assert_eq!(spell(&lexed.tokens[6..11]), "std::string const &");
    }
}
