//! Calling one C or C++ function of the user's code with JSON arguments (`kiln-call/1`).
//!
//! C has no reflection, so the call is compiled: [`prepare`] finds the function's definition in
//! the code, reads its signature and generates a *dispatcher*, a small program that
//! `#include`s the user's file (so that `static` functions can be called too), decodes the
//! arguments of a call frame into locals of the exact C types, calls the function and writes the
//! result frame. The dispatcher and the user's file are written together to [`KILN_DIR`],
//! compiled with [`compile_argv`] and run as [`run_argv`] in [`RUN_CWD`], with the result
//! channel on fd 3. [`encode_call`] turns a call's JSON arguments into the call frame's
//! payload, checking every value against its C type first, so the C side needs no JSON parser.
//!
//! # Types
//!
//! | C or C++ | JSON |
//! |---|---|
//! | `short`, `int`, `long`, `long long`, their `unsigned` forms, `signed char`, `unsigned char`, `size_t`, `ssize_t`, `ptrdiff_t`, `intptr_t`, `uintptr_t`, `intmax_t`, `uintmax_t`, `off_t`, `int8_t` … `uint64_t` | an integer, range-checked against the type (`long` is 64 bits: Kiln's targets are LP64) |
//! | `char` | a one-byte string: a character, not a small integer (`signed char` and `unsigned char` are integers) |
//! | `float`, `double`, `long double` | a number; a result is written in the fewest digits that read back as the same value, and NaN or an infinity is a `SerializationError` |
//! | `bool`, `_Bool` | a boolean |
//! | `char *`, `const char *`, `char const *const` | a string without NUL bytes, or `null` for a NULL pointer; a NULL result is `null` |
//! | C++ `std::string`, `std::string_view`, `const std::string &` | a string (NUL bytes allowed) |
//! | C++ `const T &` for any of the above | as `T` |
//! | `void` result | `null` |
//!
//! Anything else (other pointers, structs, enums, arrays, non-const references, variadic
//! functions) is a [`NativeError::UnsupportedSignature`] naming the parameter and its type.
//! Result strings that are not UTF-8 become `{"$base64": "…"}`, as in every language.
//! Typedefs and `using` aliases at file scope are followed. C++ default arguments make their
//! parameters optional (the dispatcher calls with fewer arguments). C++ overloads and
//! templates are refused unless a schema gives the types, in which case the compiler picks.
//!
//! # The call frame payload
//!
//! The frame on the wire is, as for every language, a `u32` big-endian length and the payload.
//! A native payload is binary (all integers little-endian):
//!
//! ```text
//! "KCF1"                       magic: a native call frame, version 1
//! u32 len, len bytes           the call's id
//! u32 count                    how many leading C parameters are passed (fewer than declared
//!                              only when C++ defaults fill the rest)
//! count × (tag, value)         in declaration order:
//!   'i' i64                    signed integers
//!   'u' u64                    unsigned integers
//!   'f' f64                    float, double, long double (IEEE 754 bits)
//!   'b' u8 (0 or 1)            bool
//!   'c' u8                     char
//!   's' u32 len, len bytes     strings
//!   'n'                        a NULL char *
//! ```
//!
//! The dispatcher checks every tag against the parameter's type and that nothing follows; a
//! malformed frame makes it exit with status 70 and a message on stderr.

mod call;
mod decl;
mod dispatch;
mod lex;
mod signature;
mod types;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

pub use self::call::encode_call;
use self::signature::{from_schema, inferred, locate, merge};
use super::schema::{FunctionSchema, ParamType, SchemaError, SignatureSource};

/// Where the dispatcher, the user's file and the binary live inside the sandbox.
pub const KILN_DIR: &str = "/tmp/.kiln";

/// The compiled dispatcher.
pub const BINARY: &str = "/tmp/.kiln/call";

/// The working directory the dispatcher runs in.
pub const RUN_CWD: &str = "/workspace";

/// The exit status of a dispatcher that was given a malformed frame.
pub const EXIT_MALFORMED: i32 = 70;

/// A native language functions can be called in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NativeLanguage {
    /// C (GNU C17).
    C,
    /// C++ (GNU C++17).
    Cpp,
}

impl NativeLanguage {
    /// The language of a catalog name or alias (`c`, `gcc`, `cpp`, `c++`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "c" | "gcc" | "c17" => Some(NativeLanguage::C),
            "cpp" | "c++" | "g++" | "cxx" => Some(NativeLanguage::Cpp),
            _ => None,
        }
    }

    /// The file the user's code is written to, next to the dispatcher.
    pub fn user_file(self) -> &'static str {
        match self {
            NativeLanguage::C => "user_code.c",
            NativeLanguage::Cpp => "user_code.cpp",
        }
    }

    /// The dispatcher's file.
    pub fn dispatcher_file(self) -> &'static str {
        match self {
            NativeLanguage::C => "kiln_dispatch.c",
            NativeLanguage::Cpp => "kiln_dispatch.cpp",
        }
    }

    fn is_cpp(self) -> bool {
        self == NativeLanguage::Cpp
    }
}

/// The compiler command for the dispatcher (which includes the user's file). Implicit
/// declarations are errors in C so that a schema-built call of a function the code does not
/// declare fails to compile rather than being called with guessed types.
pub fn compile_argv(lang: NativeLanguage) -> Vec<String> {
    let dispatcher = format!("{KILN_DIR}/{}", lang.dispatcher_file());
    let argv: &[&str] = match lang {
        NativeLanguage::C => &[
            "gcc",
            "-std=gnu17",
            "-O1",
            "-pipe",
            "-Werror=implicit-function-declaration",
            "-o",
            BINARY,
            &dispatcher,
            "-lm",
        ],
        NativeLanguage::Cpp => &[
            "g++",
            "-std=gnu++17",
            "-O1",
            "-pipe",
            "-o",
            BINARY,
            &dispatcher,
            "-lm",
        ],
    };
    argv.iter().map(|arg| (*arg).to_owned()).collect()
}

/// The command that serves calls, in [`RUN_CWD`] with the result channel on fd 3.
pub fn run_argv() -> Vec<String> {
    vec![BINARY.to_owned()]
}

/// How a C type is passed and returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NativeKind {
    /// An integer of that signedness and width.
    Int {
        /// Whether it is signed.
        signed: bool,
        /// Its width in bits: 8, 16, 32 or 64.
        bits: u8,
    },
    /// `char`: a one-byte string.
    Char,
    /// A floating-point type.
    Float(FloatKind),
    /// `bool` or `_Bool`.
    Bool,
    /// `char *` or `const char *`.
    CString,
    /// C++ `std::string`, `std::string_view` or a const reference to either.
    StdString,
    /// `void` (results only).
    Void,
}

/// A floating-point type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatKind {
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `long double`.
    LongDouble,
}

/// A parameter or return type: how it is passed, and how the code spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeType {
    /// How it is passed.
    pub kind: NativeKind,
    /// The declaration's spelling, for messages (`const char *`, `u64`).
    pub spelling: String,
}

impl NativeType {
    fn new(kind: NativeKind, spelling: &str) -> Self {
        NativeType {
            kind,
            spelling: spelling.to_owned(),
        }
    }
}

/// A parameter of a callable function, in the order arguments bind to.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeParam {
    /// The name keyword arguments match (`argN` for an unnamed parameter).
    pub name: String,
    /// Its C type.
    pub ty: NativeType,
    /// Its position in the C parameter list (the schema may list parameters in another order).
    pub position: usize,
    /// Whether a call must give it a value.
    pub required: bool,
    /// The schema's default for it.
    pub default: Option<Value>,
    /// Whether the C++ declaration gives it a default argument.
    pub has_cpp_default: bool,
    /// The schema's type for it, checked in addition to the C type.
    pub schema_type: Option<ParamType>,
}

/// A function the dispatcher can call.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeSignature {
    /// Its language.
    pub language: NativeLanguage,
    /// The name it was asked for, for messages.
    pub function: String,
    /// The expression the dispatcher calls (`add`, `geo::area`, `kiln__user_main`).
    pub call: String,
    /// Its return type.
    pub returns: NativeType,
    /// Its parameters, in binding order.
    pub params: Vec<NativeParam>,
}

impl NativeSignature {
    /// The parameters in C order.
    fn c_params(&self) -> Vec<&NativeParam> {
        let mut params: Vec<&NativeParam> = self.params.iter().collect();
        params.sort_by_key(|param| param.position);
        params
    }

    /// The fewest arguments a C call may be given: trailing parameters with C++ defaults may be
    /// left out.
    fn min_count(&self) -> usize {
        let params = self.c_params();
        let optional_tail = params
            .iter()
            .rev()
            .take_while(|param| param.has_cpp_default)
            .count();
        params.len() - optional_tail
    }
}

impl fmt::Display for NativeSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .c_params()
            .iter()
            .map(|param| {
                // `char *s`, `int n`
                let glue = param.ty.spelling.ends_with(['*', '&']);
                format!(
                    "{}{}{}",
                    param.ty.spelling,
                    if glue { "" } else { " " },
                    param.name
                )
            })
            .collect();
        write!(
            f,
            "{} {}({})",
            self.returns.spelling,
            self.function,
            params.join(", ")
        )
    }
}

/// A prepared call: the files to write next to each other in [`KILN_DIR`] and the signature
/// [`encode_call`] binds arguments to.
#[derive(Debug, Clone)]
pub struct NativeProgram {
    /// The dispatcher's file name.
    pub dispatcher_file: &'static str,
    /// The dispatcher's source.
    pub dispatcher: String,
    /// The file name the user's code must be written to.
    pub user_file: &'static str,
    /// What is called.
    pub signature: NativeSignature,
    /// Where the signature came from, reported in the result.
    pub signature_source: SignatureSource,
}

/// Why a function cannot be called; [`NativeError::error_type`] is the result's error type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NativeError {
    /// The code defines no function of that name.
    #[error("function '{function}' not found: {detail}")]
    FunctionNotFound {
        /// The name asked for.
        function: String,
        /// Where it was looked for.
        detail: String,
    },
    /// The function is overloaded or a template, so its types are not one signature.
    #[error(
        "'{function}' {detail}: overloaded/template functions cannot be called; give a schema \
         or a plain function"
    )]
    Overloaded {
        /// The name asked for.
        function: String,
        /// Which.
        detail: String,
    },
    /// A parameter or the result has a type no JSON value maps to.
    #[error("cannot call '{function}': {detail}")]
    UnsupportedSignature {
        /// The name asked for.
        function: String,
        /// The parameter (or result), its type and why.
        detail: String,
    },
    /// The arguments do not fit the signature.
    #[error("{0}")]
    ArgumentError(String),
    /// The schema is invalid or contradicts the declaration.
    #[error("invalid schema: {0}")]
    Schema(String),
}

impl NativeError {
    /// The error `type` of the call's result.
    pub fn error_type(&self) -> &'static str {
        match self {
            NativeError::FunctionNotFound { .. } => "FunctionNotFound",
            NativeError::Overloaded { .. } | NativeError::UnsupportedSignature { .. } => {
                "UnsupportedSignature"
            }
            NativeError::ArgumentError(_) => "ArgumentError",
            NativeError::Schema(_) => "SchemaError",
        }
    }
}

impl From<SchemaError> for NativeError {
    fn from(error: SchemaError) -> Self {
        NativeError::Schema(error.to_string())
    }
}

/// Prepares a call of `function` in `code`: finds its definition, reads its signature (the
/// schema, when given, names and orders the parameters) and generates the dispatcher.
///
/// When the declaration cannot be used (not found, an overload, a type without a JSON mapping)
/// but the schema types every parameter and the result, the call is built from the schema
/// instead (number → `double`, integer → `long long`, string → `char *`, boolean → `bool`),
/// and the compiler converts to the real types or reports why it cannot.
pub fn prepare(
    lang: NativeLanguage,
    code: &str,
    function: &str,
    schema: Option<&FunctionSchema>,
) -> Result<NativeProgram, NativeError> {
    check_function_name(lang, function)?;
    if let Some(schema) = schema {
        schema.validate()?;
    }
    let lexed = lex::lex(code, lang.is_cpp());
    let scanned = decl::scan(&lexed, lang.is_cpp());
    let located = locate(&scanned, lang, function);
    let (signature, source) = match (located, schema) {
        (Ok(located), None) => (
            inferred(lang, function, &located)?,
            SignatureSource::Inferred,
        ),
        (Ok(located), Some(schema)) => match inferred(lang, function, &located) {
            Ok(base) => (merge(base, schema)?, SignatureSource::Schema),
            Err(error) => (
                from_schema(lang, function, schema).ok_or(error)??,
                SignatureSource::Schema,
            ),
        },
        (Err(error), Some(schema)) => (
            from_schema(lang, function, schema).ok_or(error)??,
            SignatureSource::Schema,
        ),
        (Err(error), None) => return Err(error),
    };
    let dispatcher = dispatch::generate(&signature, source);
    Ok(NativeProgram {
        dispatcher_file: lang.dispatcher_file(),
        dispatcher,
        user_file: lang.user_file(),
        signature,
        signature_source: source,
    })
}

/// Only identifiers (joined by `::` in C++) can be called; the name is written into the
/// dispatcher's source, so nothing else may get there.
fn check_function_name(lang: NativeLanguage, function: &str) -> Result<(), NativeError> {
    let identifier = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = function.split("::").collect();
    let not_found = |detail: &str| NativeError::FunctionNotFound {
        function: function.to_owned(),
        detail: detail.to_owned(),
    };
    if !parts.iter().all(|part| identifier(part)) || (!lang.is_cpp() && parts.len() > 1) {
        return Err(not_found(if lang.is_cpp() {
            "a function name is a C++ identifier, optionally qualified with '::'"
        } else {
            "a function name is a C identifier"
        }));
    }
    if parts.iter().any(|part| part.starts_with("kiln__")) {
        return Err(not_found(
            "names starting with kiln__ belong to Kiln's dispatcher",
        ));
    }
    Ok(())
}
