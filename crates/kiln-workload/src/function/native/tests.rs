//! `prepare` on real declarations, and end to end: dispatchers compiled with the host's gcc and
//! g++ and run with one end of a socket pair as fd 3, as the sandbox runs them.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use serde_json::{json, Map, Value};

use super::*;

fn c(code: &str, function: &str) -> Result<NativeProgram, NativeError> {
    prepare(NativeLanguage::C, code, function, None)
}

fn cpp(code: &str, function: &str) -> Result<NativeProgram, NativeError> {
    prepare(NativeLanguage::Cpp, code, function, None)
}

fn schema(value: Value) -> FunctionSchema {
    serde_json::from_value(value).expect("a valid schema")
}

/// The parameters as `(name, spelling)`, in binding order.
fn params(program: &NativeProgram) -> Vec<(String, String)> {
    program
        .signature
        .params
        .iter()
        .map(|param| (param.name.clone(), param.ty.spelling.clone()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(name, spelling)| ((*name).to_owned(), (*spelling).to_owned()))
        .collect()
}

#[test]
fn comments_and_strings_do_not_confuse_the_parser() {
    let code = r#"
        /* int add(int a) { */
        const char *decoy = "int add(double x) {";
        char brace = '{';
        // int add(char c);
        int add(int a, int b) { return a + b; /* } */ }
        #define NOT_A_DEFINITION int add(float f) { }
    "#;
    let program = c(code, "add").expect("add is found");
    assert_eq!(params(&program), pairs(&[("a", "int"), ("b", "int")]));
    assert_eq!(program.signature.to_string(), "int add(int a, int b)");
    assert_eq!(program.signature_source, SignatureSource::Inferred);
    assert_eq!(program.dispatcher_file, "kiln_dispatch.c");
    assert_eq!(program.user_file, "user_code.c");
    assert!(program.dispatcher.contains("#include \"user_code.c\""));
}

#[test]
fn qualifiers_and_pointer_spellings() {
    let code = "static inline unsigned long long f(char*a, char *b, char * c, char* d, \
                const char*e, char const *g, const char *const h) { return 0; }";
    let program = c(code, "f").expect("f is found");
    let kinds: Vec<NativeKind> = program
        .signature
        .params
        .iter()
        .map(|param| param.ty.kind)
        .collect();
    assert_eq!(kinds, vec![NativeKind::CString; 7]);
    let names: Vec<&str> = program
        .signature
        .params
        .iter()
        .map(|param| param.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "g", "h"]);
    assert_eq!(
        program.signature.returns.kind,
        NativeKind::Int {
            signed: false,
            bits: 64
        }
    );
    assert_eq!(program.signature.params[6].ty.spelling, "const char *const");
}

#[test]
fn cpp_string_references() {
    let code = "#include <string>\nstd::string greet(const std::string& name, std::string_view x, \
                std::string const &y) { return name; }";
    let program = cpp(code, "greet").expect("greet is found");
    assert!(program
        .signature
        .params
        .iter()
        .all(|param| param.ty.kind == NativeKind::StdString));
    assert_eq!(program.signature.returns.kind, NativeKind::StdString);
    assert_eq!(program.dispatcher_file, "kiln_dispatch.cpp");
}

#[test]
fn a_prototype_before_the_definition() {
    let code = "int add(int x, int y);\nint twice(int v) { return add(v, v); }\n\
                int add(int a, int b) { return a + b; }";
    let program = c(code, "add").expect("add is found");
    assert_eq!(params(&program), pairs(&[("a", "int"), ("b", "int")]));
    // Names missing from the definition come from the prototype.
    let unnamed = "long mul(long left, long right);\nlong mul(long, long) { return 0; }";
    let program = c(unnamed, "mul").expect("mul is found");
    assert_eq!(
        params(&program),
        pairs(&[("left", "long"), ("right", "long")])
    );
}

#[test]
fn unnamed_parameters_get_positional_names() {
    let program = c("int f(int, double) { return 0; }", "f").expect("f is found");
    assert_eq!(
        params(&program),
        pairs(&[("arg0", "int"), ("arg1", "double")])
    );
}

#[test]
fn a_missing_function_is_not_found() {
    let error = c("int add(int a, int b) { return a + b; }", "subtract").expect_err("missing");
    assert_eq!(error.error_type(), "FunctionNotFound");
    assert!(error.to_string().contains("subtract"), "{error}");
    let declared = c("int add(int a, int b);", "add").expect_err("only declared");
    assert_eq!(declared.error_type(), "FunctionNotFound");
    assert!(
        declared.to_string().contains("declared on line 1"),
        "{declared}"
    );
    // A member function is not at file scope.
    let member = cpp("struct K { int f() { return 1; } };", "f").expect_err("a member");
    assert_eq!(member.error_type(), "FunctionNotFound");
}

#[test]
fn names_that_are_not_identifiers_are_refused() {
    for name in ["", "a b", "f();system", "1f", "a::b", "kiln__serve"] {
        let error = c("int f(void) { return 0; }", name).expect_err("refused");
        assert_eq!(error.error_type(), "FunctionNotFound", "{name}: {error}");
    }
    assert!(cpp("namespace a { int b() { return 1; } }", "a::b").is_ok());
}

#[test]
fn a_struct_parameter_is_unsupported() {
    let code = "struct point { int x, y; };\nint area(struct point p, int scale) { return 0; }";
    let error = c(code, "area").expect_err("unsupported");
    assert_eq!(error.error_type(), "UnsupportedSignature");
    let message = error.to_string();
    assert!(message.contains("parameter 'p'"), "{message}");
    assert!(message.contains("struct point"), "{message}");
    let pointer = c("int sum(int *values, int n) { return 0; }", "sum").expect_err("a pointer");
    assert!(pointer.to_string().contains("'int *'"), "{pointer}");
    let variadic = c("int sum(int n, ...) { return 0; }", "sum").expect_err("variadic");
    assert!(variadic.to_string().contains("variadic"), "{variadic}");
    let result = c(
        "struct point origin(void) { struct point p = {0}; return p; }",
        "origin",
    )
    .expect_err("a struct result");
    assert!(result.to_string().contains("return type"), "{result}");
}

#[test]
fn overloads_and_templates_are_refused() {
    let overloaded = cpp(
        "int twice(int x) { return 2 * x; }\ndouble twice(double x) { return 2 * x; }",
        "twice",
    )
    .expect_err("overloaded");
    assert_eq!(overloaded.error_type(), "UnsupportedSignature");
    let message = overloaded.to_string();
    assert!(
        message.contains(
            "overloaded/template functions cannot be called; give a schema or a plain function"
        ),
        "{message}"
    );
    let template = cpp(
        "template <typename T>\nT twice(T x) { return x + x; }",
        "twice",
    )
    .expect_err("a template");
    assert!(template.to_string().contains("template"), "{template}");
    // The same definition in #if/#else branches is one function.
    let alternatives =
        "#ifdef FAST\nint f(int x) { return x; }\n#else\nint f(int x) { return x + 0; }\n#endif";
    assert!(c(alternatives, "f").is_ok());
}

#[test]
fn namespaces_typedefs_and_main() {
    let program = cpp(
        "namespace geo { inline namespace v1 { double area(double w, double h) { return w * h; } } }",
        "area",
    )
    .expect("area is found");
    assert_eq!(program.signature.call, "geo::v1::area");
    let typedefs = c(
        "typedef unsigned int u32;\ntypedef const char *text;\nu32 count(text s) { return 0; }",
        "count",
    )
    .expect("count is found");
    assert_eq!(params(&typedefs), pairs(&[("s", "text")]));
    assert_eq!(
        typedefs.signature.returns.kind,
        NativeKind::Int {
            signed: false,
            bits: 32
        }
    );
    let ambiguous = cpp(
        "namespace a { int f() { return 1; } }\nnamespace b { int f() { return 2; } }",
        "f",
    )
    .expect_err("ambiguous");
    assert!(
        ambiguous.to_string().contains("a::f and b::f"),
        "{ambiguous}"
    );
    assert!(cpp(
        "namespace a { int f() { return 1; } }\nnamespace b { int f() { return 2; } }",
        "b::f"
    )
    .is_ok());
    let main = c("int main(void) { return 7; }", "main").expect("main is found");
    assert_eq!(main.signature.call, "kiln__user_main");
    let extern_c = cpp(
        "extern \"C\" int one(void) { return 1; }\nextern \"C\" {\nint two() { return 2; }\n}",
        "two",
    );
    assert!(extern_c.is_ok());
}

#[test]
fn a_schema_names_orders_and_defaults() {
    let code = "int sub(int a, int b) { return a - b; }";
    let renamed = prepare(
        NativeLanguage::C,
        code,
        "sub",
        Some(&schema(
            json!({"params": [{"name": "x"}, {"name": "y", "default": 1}]}),
        )),
    )
    .expect("prepared");
    assert_eq!(params(&renamed), pairs(&[("x", "int"), ("y", "int")]));
    assert_eq!(renamed.signature_source, SignatureSource::Schema);
    assert!(!renamed.signature.params[1].required);
    let reordered = prepare(
        NativeLanguage::C,
        code,
        "sub",
        Some(&schema(json!({"params": [{"name": "b"}, {"name": "a"}]}))),
    )
    .expect("prepared");
    let positions: Vec<usize> = reordered
        .signature
        .params
        .iter()
        .map(|param| param.position)
        .collect();
    assert_eq!(positions, [1, 0]);
    let mismatched = prepare(
        NativeLanguage::C,
        code,
        "sub",
        Some(&schema(
            json!({"params": [{"name": "a", "type": "string"}, {"name": "b"}]}),
        )),
    )
    .expect_err("a string does not fit an int");
    assert_eq!(mismatched.error_type(), "SchemaError");
    assert!(
        mismatched.to_string().contains("schema.params[0].type"),
        "{mismatched}"
    );
    let counted = prepare(
        NativeLanguage::C,
        code,
        "sub",
        Some(&schema(json!({"params": [{"name": "a"}]}))),
    )
    .expect_err("too few");
    assert!(counted.to_string().contains("takes 2"), "{counted}");
    let bad_default = prepare(
        NativeLanguage::C,
        code,
        "sub",
        Some(&schema(
            json!({"params": [{"name": "a"}, {"name": "b", "default": "x"}]}),
        )),
    )
    .expect_err("a string default for an int");
    assert!(
        bad_default.to_string().contains("schema.params[1].default"),
        "{bad_default}"
    );
    let invalid = prepare(
        NativeLanguage::C,
        code,
        "sub",
        Some(&schema(json!({"params": [{"name": "a"}, {"name": "a"}]}))),
    )
    .expect_err("duplicate names");
    assert!(
        invalid.to_string().contains("schema.params[1].name"),
        "{invalid}"
    );
}

#[test]
fn a_typed_schema_stands_in_for_a_declaration() {
    let typed = schema(json!({
        "params": [{"name": "x", "type": "integer"}],
        "returnType": "integer"
    }));
    // Defined by a macro the parser cannot see through.
    let code = "#define DEFINE(name) long name(long x) { return x * 3; }\nDEFINE(triple)";
    let program = prepare(NativeLanguage::C, code, "triple", Some(&typed)).expect("prepared");
    assert_eq!(program.signature_source, SignatureSource::Schema);
    assert_eq!(params(&program), pairs(&[("x", "long long")]));
    // Without types the original error stands.
    let untyped = schema(json!({"params": [{"name": "x"}]}));
    let error = prepare(NativeLanguage::C, code, "triple", Some(&untyped)).expect_err("untyped");
    assert_eq!(error.error_type(), "FunctionNotFound");
}

// ---- end to end ----

/// A dispatcher compiled in a temporary directory standing in for `/tmp/.kiln`.
struct Built {
    dir: tempfile::TempDir,
    program: NativeProgram,
    binary: PathBuf,
}

/// What a run of the dispatcher produced.
#[derive(Debug)]
struct Run {
    frames: Vec<Value>,
    stdout: String,
    stderr: String,
    status: ExitStatus,
}

impl Run {
    /// The one result frame, checked for the protocol's fixed fields.
    fn result(&self) -> &Value {
        assert_eq!(self.frames.len(), 1, "{self:?}");
        let frame = &self.frames[0];
        assert_eq!(frame["v"], json!(1), "{frame}");
        assert_eq!(frame["id"], json!("call-1"), "{frame}");
        assert_eq!(frame["type"], json!("result"), "{frame}");
        assert!(self.status.success(), "{self:?}");
        frame
    }

    fn value(&self) -> &Value {
        let frame = self.result();
        assert_eq!(frame["success"], json!(true), "{frame}");
        &frame["result"]
    }

    fn error(&self) -> &Value {
        let frame = self.result();
        assert_eq!(frame["success"], json!(false), "{frame}");
        &frame["error"]
    }
}

fn build(
    lang: NativeLanguage,
    code: &str,
    function: &str,
    schema: Option<&FunctionSchema>,
) -> Built {
    let program = prepare(lang, code, function, schema).expect("prepared");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(program.user_file), code).expect("user code written");
    std::fs::write(
        dir.path().join(program.dispatcher_file),
        &program.dispatcher,
    )
    .expect("dispatcher written");
    let here = dir.path().to_str().expect("a UTF-8 path");
    let argv: Vec<String> = compile_argv(lang)
        .into_iter()
        .map(|arg| arg.replace(KILN_DIR, here))
        .collect();
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|error| {
            panic!("{} must be installed to run these tests: {error}", argv[0])
        });
    assert!(
        output.status.success(),
        "compiling failed:\n{}\n--- dispatcher ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        program.dispatcher
    );
    let binary = PathBuf::from(BINARY.replace(KILN_DIR, here));
    Built {
        dir,
        program,
        binary,
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// Runs the dispatcher with the payloads as call frames, then end of file.
fn run(built: &Built, payloads: &[Vec<u8>]) -> Run {
    let (mut ours, theirs) = UnixStream::pair().expect("a socket pair");
    // dup2 onto the same number would keep the descriptor's close-on-exec flag.
    let theirs = if theirs.as_raw_fd() == 3 {
        theirs.try_clone().expect("a duplicate")
    } else {
        theirs
    };
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(&built.binary);
    command
        .current_dir(built.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let hook = move || {
        // SAFETY: dup2 only acts on the child's descriptor table; it is async-signal-safe,
        // which is all that may run between fork and exec.
        if unsafe { libc::dup2(fd, 3) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook calls nothing but dup2 (async-signal-safe) and allocates nothing.
    unsafe { command.pre_exec(hook) };
    let child = command.spawn().expect("the dispatcher starts");
    drop(theirs);
    for payload in payloads {
        ours.write_all(&frame(payload))
            .expect("the call frame is sent");
    }
    ours.shutdown(Shutdown::Write).expect("shutdown");
    let mut bytes = Vec::new();
    ours.read_to_end(&mut bytes).expect("the result is read");
    let output = child.wait_with_output().expect("the dispatcher ends");
    let mut frames = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(head.try_into().expect("four bytes")) as usize;
        let (payload, tail) = tail.split_at(len);
        frames.push(serde_json::from_slice(payload).expect("a JSON result frame"));
        rest = tail;
    }
    Run {
        frames,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        status: output.status,
    }
}

fn call_built(built: &Built, args: Value, kwargs: Value) -> Run {
    let args = args.as_array().cloned().unwrap_or_default();
    let kwargs = match kwargs {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let payload = encode_call(&built.program.signature, "call-1", &args, &kwargs).expect("encoded");
    run(built, &[payload])
}

fn call_c(code: &str, function: &str, args: Value) -> Run {
    call_built(
        &build(NativeLanguage::C, code, function, None),
        args,
        json!({}),
    )
}

fn call_cpp(code: &str, function: &str, args: Value) -> Run {
    call_built(
        &build(NativeLanguage::Cpp, code, function, None),
        args,
        json!({}),
    )
}

#[test]
fn calls_add_by_position_and_keyword() {
    let built = build(
        NativeLanguage::C,
        "int add(int a, int b) { return a + b; }",
        "add",
        None,
    );
    let run = call_built(&built, json!([2, 3]), json!({}));
    assert_eq!(run.value(), &json!(5));
    assert_eq!(run.result()["signatureSource"], json!("inferred"));
    let by_name = call_built(&built, json!([]), json!({"b": -40, "a": 2}));
    assert_eq!(by_name.value(), &json!(-38));
}

#[test]
fn doubles_floats_and_integers_keep_their_values() {
    let code = "double mean(double a, double b) { return (a + b) / 2; }\n\
                float third(void) { return 1.0f / 3; }\n\
                unsigned long long big(void) { return 18446744073709551615ULL; }\n\
                long long small(void) { return -9223372036854775807LL - 1; }";
    assert_eq!(call_c(code, "mean", json!([1, 2])).value(), &json!(1.5));
    let integral = call_c(code, "mean", json!([4, 4]));
    assert!(integral.value().is_f64(), "{:?}", integral.value());
    assert_eq!(integral.value(), &json!(4.0));
    assert_eq!(call_c(code, "third", json!([])).value(), &json!(0.33333334));
    assert_eq!(call_c(code, "big", json!([])).value(), &json!(u64::MAX));
    assert_eq!(call_c(code, "small", json!([])).value(), &json!(i64::MIN));
}

#[test]
fn booleans_and_chars() {
    let code = "#include <stdbool.h>\n#include <ctype.h>\n\
                bool is_even(long n) { return n % 2 == 0; }\n\
                int flip(bool b) { return !b; }\n\
                char upper(char c) { return (char)toupper((unsigned char)c); }";
    assert_eq!(call_c(code, "is_even", json!([4])).value(), &json!(true));
    assert_eq!(call_c(code, "is_even", json!([7])).value(), &json!(false));
    assert_eq!(call_c(code, "flip", json!([true])).value(), &json!(0));
    assert_eq!(call_c(code, "upper", json!(["q"])).value(), &json!("Q"));
}

#[test]
fn strings_in_and_out() {
    let code = r#"#include <stdio.h>
        #include <string.h>
        const char *greet(const char *name) {
            static char buffer[256];
            snprintf(buffer, sizeof buffer, "Hello, %s!", name);
            return buffer;
        }
        char *echo(char *s) { return s; }
        const char *nothing(void) { return NULL; }
        int is_null(const char *s) { return s == NULL; }
        const char *raw(void) { return "\xff\xfe"; }
    "#;
    assert_eq!(
        call_c(code, "greet", json!(["World"])).value(),
        &json!("Hello, World!")
    );
    let unicode = "héllo, 世界 🌍 \"quoted\" \\ \n\t\u{1}\u{7f}";
    assert_eq!(
        call_c(code, "echo", json!([unicode])).value(),
        &json!(unicode)
    );
    assert_eq!(call_c(code, "nothing", json!([])).value(), &Value::Null);
    assert_eq!(call_c(code, "is_null", json!([null])).value(), &json!(1));
    assert_eq!(
        call_c(code, "raw", json!([])).value(),
        &json!({"$base64": "//4="})
    );
}

#[test]
fn a_one_mebibyte_string() {
    let code = "#include <string.h>\nsize_t length(const char *s) { return strlen(s); }";
    let big = "é".repeat(1 << 20);
    assert_eq!(
        call_c(code, "length", json!([big])).value(),
        &json!(2 << 20)
    );
    let echo = "#include <string>\nstd::string echo(const std::string &s) { return s; }";
    assert_eq!(call_cpp(echo, "echo", json!([big])).value(), &json!(big));
}

#[test]
fn cpp_strings_namespaces_and_defaults() {
    let code = r#"#include <string>
        #include <string_view>
        #include <cctype>
        namespace text {
        std::string shout(const std::string &s, int times = 1) {
            std::string out;
            for (int i = 0; i < times; i++) {
                for (char c : s) out += (char)std::toupper((unsigned char)c);
            }
            return out + "!";
        }
        }
        std::size_t count(std::string_view s) { return s.size(); }
        std::string nul() { return std::string("a\0b", 3); }
    "#;
    let built = build(NativeLanguage::Cpp, code, "shout", None);
    assert_eq!(
        call_built(&built, json!(["hi"]), json!({})).value(),
        &json!("HI!")
    );
    assert_eq!(
        call_built(&built, json!(["hi"]), json!({"times": 2})).value(),
        &json!("HIHI!")
    );
    assert_eq!(call_cpp(code, "count", json!(["héllo"])).value(), &json!(6));
    assert_eq!(call_cpp(code, "nul", json!([])).value(), &json!("a\u{0}b"));
}

#[test]
fn a_void_function_returns_null() {
    let run = call_c("void nothing(int x) { (void)x; }", "nothing", json!([1]));
    assert_eq!(run.value(), &Value::Null);
}

#[test]
fn user_main_and_clashing_names() {
    let code = "#include <stdio.h>\n\
                static int write(int x) { return x * 3; }\n\
                int add(int a, int b) { return write(a) + b; }\n\
                int main(int argc, char **argv) { (void)argv; printf(\"main ran\\n\"); return argc; }";
    let run = call_c(code, "add", json!([2, 1]));
    assert_eq!(run.value(), &json!(7));
    assert!(!run.stdout.contains("main ran"), "{run:?}");
    let main = call_c("int main(void) { return 7; }", "main", json!([]));
    assert_eq!(main.value(), &json!(7));
    // User macros cannot break the code after the include.
    let macro_int = "#define int long long\nint add(int a, int b) { return a + b; }";
    let run = call_c(macro_int, "add", json!([1u64 << 40, 1]));
    assert_eq!(run.value(), &json!((1u64 << 40) + 1));
}

#[test]
fn printing_does_not_touch_the_result() {
    let code = "#include <stdio.h>\nint shout(int n) { printf(\"hello from C %d\\n\", n); \
                fprintf(stderr, \"to stderr\\n\"); return n * 2; }";
    let run = call_c(code, "shout", json!([21]));
    assert_eq!(run.value(), &json!(42));
    assert_eq!(run.stdout, "hello from C 21\n");
    assert_eq!(run.stderr, "to stderr\n");
}

#[test]
fn fd_3_is_moved_out_of_the_way() {
    let code = "#include <fcntl.h>\n\
                int channel(void) {\n\
                    if (fcntl(3, F_GETFD) != -1) return -1;\n\
                    int flags = fcntl(100, F_GETFD);\n\
                    return flags == -1 ? -2 : (flags & FD_CLOEXEC) != 0;\n\
                }";
    assert_eq!(call_c(code, "channel", json!([])).value(), &json!(1));
}

#[test]
fn a_segfault_kills_the_process_without_a_result() {
    let run = call_c(
        "int deref(long address) { return *(volatile int *)address; }",
        "deref",
        json!([0]),
    );
    assert!(run.frames.is_empty(), "{run:?}");
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{run:?}");
}

#[test]
fn nan_is_a_serialization_error() {
    let run = call_c(
        "#include <math.h>\ndouble root(double x) { return sqrt(x); }",
        "root",
        json!([-1]),
    );
    let error = run.error();
    assert_eq!(error["type"], json!("SerializationError"));
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("root returned NaN"), "{message}");
}

#[test]
fn cpp_exceptions_are_error_results() {
    let code = "#include <stdexcept>\n\
                int boom(int x) { if (x > 0) throw std::runtime_error(\"bad input\"); return x; }\n\
                int other(void) { throw 42; }";
    let run = call_cpp(code, "boom", json!([1]));
    assert_eq!(
        run.error(),
        &json!({"message": "bad input", "type": "std::runtime_error"})
    );
    let thrown_int = call_cpp(code, "other", json!([]));
    assert_eq!(thrown_int.error()["type"], json!("int"));
}

#[test]
fn schemas_build_and_default_calls() {
    let typed = schema(json!({
        "params": [{"name": "x", "type": "integer"}],
        "returnType": "integer"
    }));
    let template = "template <typename T> T twice(T v) { return v + v; }";
    let built = build(NativeLanguage::Cpp, template, "twice", Some(&typed));
    let run = call_built(&built, json!([21]), json!({}));
    assert_eq!(run.value(), &json!(42));
    assert_eq!(run.result()["signatureSource"], json!("schema"));
    let defaulted = schema(json!({
        "params": [{"name": "x", "type": "integer"}, {"name": "factor", "default": 10}]
    }));
    let scale = "int scale(int x, int factor) { return x * factor; }";
    let built = build(NativeLanguage::C, scale, "scale", Some(&defaulted));
    assert_eq!(
        call_built(&built, json!([4]), json!({})).value(),
        &json!(40)
    );
}

#[test]
fn one_process_serves_every_frame_until_end_of_file() {
    let built = build(
        NativeLanguage::C,
        "int add(int a, int b) { return a + b; }",
        "add",
        None,
    );
    let sig = &built.program.signature;
    let first = encode_call(sig, "one", &[json!(1), json!(2)], &Map::new()).expect("encoded");
    let second = encode_call(sig, "two", &[json!(3), json!(4)], &Map::new()).expect("encoded");
    let run = run(&built, &[first, second]);
    assert!(run.status.success(), "{run:?}");
    let results: Vec<(Value, Value)> = run
        .frames
        .iter()
        .map(|frame| (frame["id"].clone(), frame["result"].clone()))
        .collect();
    assert_eq!(
        results,
        [(json!("one"), json!(3)), (json!("two"), json!(7))]
    );
}

#[test]
fn a_malformed_frame_exits_70() {
    let built = build(
        NativeLanguage::C,
        "int one(void) { return 1; }",
        "one",
        None,
    );
    let run = run(&built, &[b"{\"v\":1}".to_vec()]);
    assert!(run.frames.is_empty(), "{run:?}");
    assert_eq!(run.status.code(), Some(EXIT_MALFORMED), "{run:?}");
    assert!(run.stderr.contains("malformed call frame"), "{run:?}");
    // A frame for another signature fails its tag checks.
    let mut wrong = b"KCF1".to_vec();
    wrong.extend_from_slice(&0u32.to_le_bytes());
    wrong.extend_from_slice(&1u32.to_le_bytes());
    wrong.extend_from_slice(b"s\x00\x00\x00\x00");
    let run = self::run(&built, &[wrong]);
    assert_eq!(run.status.code(), Some(EXIT_MALFORMED), "{run:?}");
}
