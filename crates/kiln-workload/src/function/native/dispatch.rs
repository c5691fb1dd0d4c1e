//! The dispatcher's source: a fixed runtime, the user's file, then the function that decodes
//! one call's arguments, makes the call and writes its result.
//!
//! Layout, and why:
//!
//! 1. `_GNU_SOURCE`, the headers and the runtime (frame reading and writing, JSON output) and
//!    `main` come first, so that nothing the user's code `#define`s can change them, while the
//!    feature-test macro the code may define has its widest effect already.
//! 2. The user's file, with `main` renamed (`#define main kiln__user_main`), since the
//!    dispatcher has its own.
//! 3. `kiln__serve`, the only code after the user's, written without `int` or any other name a
//!    user macro could plausibly redefine.
//!
//! The runtime reaches fd 3 through `syscall(2)` under a private name (an asm label), so user
//! functions called `read`, `write` or `close` clash with no declaration of the runtime's;
//! every runtime identifier starts with `kiln__`.

use super::super::schema::SignatureSource;
use super::{FloatKind, NativeKind, NativeLanguage, NativeSignature};

/// What every dispatcher starts with (valid C17 and C++17).
const RUNTIME: &str = r#"#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#ifdef __cplusplus
#include <cxxabi.h>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <typeinfo>
#endif

#define kiln__fn static __attribute__((unused))
/* Linux's F_DUPFD_CLOEXEC, the same on every architecture (<fcntl.h> is not included). */
#define KILN__F_DUPFD_CLOEXEC 1030

typedef struct { const unsigned char *p; size_t len; size_t pos; } kiln__in;
typedef struct { unsigned char *p; size_t len; size_t cap; } kiln__buf;

/* The result channel, moved off fd 3 by main. */
static int kiln__fd = -1;

extern long kiln__syscall(long, ...) __asm__("syscall");

kiln__fn void kiln__fatal(const char *why) {
    fprintf(stderr, "kiln dispatcher: %s\n", why);
    fflush(stderr);
    exit(70);
}

/* 1: filled; 0: end of file before the first byte; -1: end of file or an error part way. */
kiln__fn int kiln__read_exact(unsigned char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        long r = kiln__syscall(SYS_read, (long)kiln__fd, (long)(intptr_t)(p + got), (long)(n - got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

kiln__fn void kiln__write_all(const unsigned char *p, size_t n) {
    while (n > 0) {
        long w = kiln__syscall(SYS_write, (long)kiln__fd, (long)(intptr_t)p, (long)n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) kiln__fatal("cannot write the result frame");
        p += w;
        n -= (size_t)w;
    }
}

kiln__fn const unsigned char *kiln__take(kiln__in *in, size_t n) {
    if (in->len - in->pos < n) kiln__fatal("malformed call frame: truncated");
    const unsigned char *p = in->p + in->pos;
    in->pos += n;
    return p;
}

kiln__fn uint32_t kiln__u32(kiln__in *in) {
    const unsigned char *p = kiln__take(in, 4);
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

kiln__fn uint64_t kiln__u64(kiln__in *in) {
    const unsigned char *p = kiln__take(in, 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

kiln__fn void kiln__tag(kiln__in *in, unsigned char want) {
    if (*kiln__take(in, 1) != want) kiln__fatal("malformed call frame: an argument has the wrong tag");
}

kiln__fn int64_t kiln__arg_i64(kiln__in *in) {
    kiln__tag(in, 'i');
    uint64_t u = kiln__u64(in);
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

kiln__fn uint64_t kiln__arg_u64(kiln__in *in) {
    kiln__tag(in, 'u');
    return kiln__u64(in);
}

kiln__fn double kiln__arg_f64(kiln__in *in) {
    kiln__tag(in, 'f');
    uint64_t u = kiln__u64(in);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

kiln__fn int kiln__arg_bool(kiln__in *in) {
    kiln__tag(in, 'b');
    unsigned char v = *kiln__take(in, 1);
    if (v > 1) kiln__fatal("malformed call frame: a bool is neither 0 nor 1");
    return v;
}

kiln__fn char kiln__arg_char(kiln__in *in) {
    kiln__tag(in, 'c');
    return (char)*kiln__take(in, 1);
}

/* A NUL-terminated copy. It is never freed: the function may keep the pointer. */
kiln__fn char *kiln__arg_cstr(kiln__in *in) {
    unsigned char tag = *kiln__take(in, 1);
    if (tag == 'n') return 0;
    if (tag != 's') kiln__fatal("malformed call frame: an argument has the wrong tag");
    uint32_t n = kiln__u32(in);
    const unsigned char *p = kiln__take(in, n);
    if (memchr(p, 0, n)) kiln__fatal("malformed call frame: a char * string holds a NUL byte");
    char *s = (char *)malloc((size_t)n + 1);
    if (!s) kiln__fatal("out of memory");
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

#ifdef __cplusplus
kiln__fn std::string kiln__arg_string(kiln__in *in) {
    kiln__tag(in, 's');
    uint32_t n = kiln__u32(in);
    const unsigned char *p = kiln__take(in, n);
    return std::string((const char *)p, n);
}
#endif

/* Checks the magic and reads the id; returns the argument count. */
kiln__fn uint32_t kiln__open(kiln__in *in, const unsigned char **id, uint32_t *idlen) {
    if (in->len < 4 || memcmp(in->p, "KCF1", 4) != 0)
        kiln__fatal("malformed call frame: not a native call frame (KCF1)");
    in->pos = 4;
    *idlen = kiln__u32(in);
    *id = kiln__take(in, *idlen);
    return kiln__u32(in);
}

kiln__fn void kiln__close(kiln__in *in) {
    if (in->pos != in->len) kiln__fatal("malformed call frame: bytes after the last argument");
}

kiln__fn void kiln__reserve(kiln__buf *b, size_t more) {
    if (b->cap - b->len >= more) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more) {
        if (cap > SIZE_MAX / 2) kiln__fatal("out of memory");
        cap *= 2;
    }
    unsigned char *p = (unsigned char *)realloc(b->p, cap);
    if (!p) kiln__fatal("out of memory");
    b->p = p;
    b->cap = cap;
}

kiln__fn void kiln__put(kiln__buf *b, const void *s, size_t n) {
    kiln__reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

kiln__fn void kiln__puts(kiln__buf *b, const char *s) { kiln__put(b, s, strlen(s)); }

/* The length of the well-formed UTF-8 sequence at s[i], or 0. */
kiln__fn size_t kiln__utf8_seq(const unsigned char *s, size_t n, size_t i) {
    unsigned char c = s[i];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else return 0;
    if (n - i <= need) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
        if ((s[i + k] & 0xC0) != 0x80) return 0;
    return need + 1;
}

kiln__fn int kiln__utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = kiln__utf8_seq(s, n, i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD (callers check first where that matters). */
kiln__fn void kiln__json_str(kiln__buf *b, const unsigned char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (n > (SIZE_MAX - 2) / 6) kiln__fatal("out of memory");
    kiln__reserve(b, n * 6 + 2);
    unsigned char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = kiln__utf8_seq(s, n, i);
        if (k == 0) { memcpy(o, "\\ufffd", 6); o += 6; i++; continue; }
        if (k > 1) { memcpy(o, s + i, k); o += k; i += k; continue; }
        i++;
        switch (c) {
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default:
            if (c < 0x20 || c == 0x7F) {
                *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = hex[c >> 4]; *o++ = hex[c & 15];
            } else {
                *o++ = c;
            }
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

kiln__fn void kiln__base64(kiln__buf *b, const unsigned char *s, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    kiln__puts(b, "{\"$base64\":\"");
    kiln__reserve(b, (n + 2) / 3 * 4);
    unsigned char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = t[v >> 18 & 63]; *o++ = t[v >> 12 & 63]; *o++ = t[v >> 6 & 63]; *o++ = t[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        *o++ = t[v >> 18 & 63];
        *o++ = t[v >> 12 & 63];
        *o++ = i + 1 < n ? t[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    kiln__puts(b, "\"}");
}

kiln__fn void kiln__begin(kiln__buf *b, const unsigned char *id, size_t idlen) {
    b->p = 0;
    b->len = 0;
    b->cap = 0;
    kiln__reserve(b, 4096);
    kiln__put(b, "\0\0\0\0", 4); /* the frame's length, filled in by kiln__send */
    kiln__puts(b, "{\"v\":1,\"id\":");
    kiln__json_str(b, id, idlen);
    kiln__puts(b, ",\"type\":\"result\",");
}

kiln__fn void kiln__ok(kiln__buf *b, const char *json) {
    kiln__puts(b, "\"success\":true,\"result\":");
    kiln__puts(b, json);
}

kiln__fn void kiln__error(kiln__buf *b, const char *type, const char *message, size_t n) {
    kiln__puts(b, "\"success\":false,\"error\":{\"message\":");
    kiln__json_str(b, (const unsigned char *)message, n);
    kiln__puts(b, ",\"type\":");
    kiln__json_str(b, (const unsigned char *)type, strlen(type));
    kiln__puts(b, "}");
}

kiln__fn void kiln__ok_i64(kiln__buf *b, int64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)v);
    kiln__ok(b, t);
}

kiln__fn void kiln__ok_u64(kiln__buf *b, uint64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    kiln__ok(b, t);
}

kiln__fn void kiln__ok_bool(kiln__buf *b, int v) { kiln__ok(b, v ? "true" : "false"); }

/* A string result: itself when UTF-8, else {"$base64": …} as in every language. */
kiln__fn void kiln__ok_bytes(kiln__buf *b, const unsigned char *s, size_t n) {
    kiln__ok(b, "");
    if (kiln__utf8_valid(s, n)) kiln__json_str(b, s, n);
    else kiln__base64(b, s, n);
}

kiln__fn void kiln__ok_cstr(kiln__buf *b, const char *s) {
    if (!s) kiln__ok(b, "null");
    else kiln__ok_bytes(b, (const unsigned char *)s, strlen(s));
}

/* The fewest digits that read back as the same value (as a float when single), with a ".0" on
   integral values so that a floating-point result stays one in JSON. */
kiln__fn void kiln__ok_double(kiln__buf *b, double v, int single, const char *function) {
    if (!__builtin_isfinite(v)) {
        char m[512];
        snprintf(m, sizeof m, "%s returned %s, which JSON cannot represent", function,
                 __builtin_isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        kiln__error(b, "SerializationError", m, strlen(m));
        return;
    }
    char t[64];
    int precision;
    for (precision = 1; precision < 17; precision++) {
        snprintf(t, sizeof t, "%.*g", precision, v);
        if (single ? strtof(t, 0) == (float)v : strtod(t, 0) == v) break;
    }
    if (precision == 17) snprintf(t, sizeof t, "%.17g", v);
    int plain = 1;
    for (char *c = t; *c; c++) {
        if (*c == ',') *c = '.'; /* a locale's decimal comma */
        if (*c == '.' || *c == 'e' || *c == 'E') plain = 0;
    }
    if (plain) strcat(t, ".0");
    kiln__ok(b, t);
}

kiln__fn void kiln__send(kiln__buf *b, const char *source) {
    kiln__puts(b, ",\"signatureSource\":\"");
    kiln__puts(b, source);
    kiln__puts(b, "\"}");
    size_t n = b->len - 4;
    if (n > 0xFFFFFFFFu) kiln__fatal("the result is too large for a frame");
    b->p[0] = (unsigned char)(n >> 24);
    b->p[1] = (unsigned char)(n >> 16);
    b->p[2] = (unsigned char)(n >> 8);
    b->p[3] = (unsigned char)n;
    kiln__write_all(b->p, b->len);
    free(b->p);
}

/* Whatever the function printed goes out before its result does. */
kiln__fn void kiln__flush_output(void) {
#ifdef __cplusplus
    std::cout.flush();
    std::cerr.flush();
#endif
    fflush(stdout);
    fflush(stderr);
}

#ifdef __cplusplus
kiln__fn std::string kiln__demangle(const char *name) {
    int status = 0;
    char *demangled = abi::__cxa_demangle(name, 0, 0, &status);
    std::string out = status == 0 && demangled ? demangled : name;
    std::free(demangled);
    /* The standard library's new-ABI inline namespace (std::__cxx11) is a detail. */
    for (size_t at; (at = out.find("__cxx11::")) != std::string::npos;) out.erase(at, 9);
    return out;
}

/* The type and message of the exception being handled. */
kiln__fn void kiln__describe_exception(std::string &type, std::string &message) {
    try {
        throw;
    } catch (abi::__forced_unwind &) {
        throw; /* thread cancellation must go on unwinding */
    } catch (const std::exception &e) {
        type = kiln__demangle(typeid(e).name());
        const char *what = e.what();
        message = what ? what : "";
    } catch (...) {
        const std::type_info *t = abi::__cxa_current_exception_type();
        type = t ? kiln__demangle(t->name()) : "unknown";
        message = "an exception of type " + type + " was thrown";
    }
}

/* A string result of any string type; a NULL char * is null. */
kiln__fn void kiln__set_str(std::string &out, bool &null, const char *s) {
    null = !s;
    if (s) out = s;
}

kiln__fn void kiln__set_str(std::string &out, bool &null, std::string_view s) {
    null = false;
    out.assign(s.data(), s.size());
}
#endif

static void kiln__serve(const unsigned char *frame, size_t len);

int main(void) {
    /* Move the result channel to a close-on-exec descriptor before any user code runs, so that
       programs the function starts do not inherit it. */
    long fd = kiln__syscall(SYS_fcntl, 3L, (long)KILN__F_DUPFD_CLOEXEC, 100L);
    if (fd < 0) kiln__fatal("fd 3 is not open: there is no result channel");
    kiln__fd = (int)fd;
    kiln__syscall(SYS_close, 3L);
    for (;;) {
        unsigned char head[4];
        int got = kiln__read_exact(head, 4);
        if (got == 0) break; /* end of file: no more calls */
        if (got < 0) kiln__fatal("malformed call frame: truncated length");
        size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        unsigned char *frame = (unsigned char *)malloc(len ? len : 1);
        if (!frame) kiln__fatal("out of memory");
        if (len > 0 && kiln__read_exact(frame, len) != 1) kiln__fatal("malformed call frame: truncated");
        kiln__serve(frame, len);
        free(frame);
    }
    kiln__flush_output();
    return 0;
}

"#;

/// The C (or C++) type of a local holding a value of this kind, chosen so that it converts
/// implicitly to the declared type (fixed-width integers, a mutable `char *`, a `std::string`
/// that converts to `string_view` and binds to `const std::string &`).
fn local_type(kind: NativeKind, lang: NativeLanguage) -> String {
    match kind {
        NativeKind::Int { signed, bits } => {
            format!("{}int{bits}_t", if signed { "" } else { "u" })
        }
        NativeKind::Char => "char".to_owned(),
        NativeKind::Float(FloatKind::Float) => "float".to_owned(),
        NativeKind::Float(FloatKind::Double) => "double".to_owned(),
        NativeKind::Float(FloatKind::LongDouble) => "long double".to_owned(),
        NativeKind::Bool if lang == NativeLanguage::Cpp => "bool".to_owned(),
        NativeKind::Bool => "_Bool".to_owned(),
        NativeKind::CString => "char *".to_owned(),
        NativeKind::StdString => "std::string".to_owned(),
        NativeKind::Void => "void".to_owned(),
    }
}

/// The expression decoding the next argument of this kind from `kiln__c`.
fn decode(kind: NativeKind, local: &str) -> String {
    match kind {
        NativeKind::Int { signed: true, .. } => format!("({local})kiln__arg_i64(&kiln__c)"),
        NativeKind::Int { signed: false, .. } => format!("({local})kiln__arg_u64(&kiln__c)"),
        NativeKind::Char => "kiln__arg_char(&kiln__c)".to_owned(),
        NativeKind::Float(_) => format!("({local})kiln__arg_f64(&kiln__c)"),
        NativeKind::Bool => "kiln__arg_bool(&kiln__c) != 0".to_owned(),
        NativeKind::CString => "kiln__arg_cstr(&kiln__c)".to_owned(),
        NativeKind::StdString => "kiln__arg_string(&kiln__c)".to_owned(),
        NativeKind::Void => "0".to_owned(),
    }
}

/// The statement writing `kiln__r` as the call's result into `kiln__b`.
fn emit_result(kind: NativeKind, function: &str) -> String {
    match kind {
        NativeKind::Void => "kiln__ok(&kiln__b, \"null\");".to_owned(),
        NativeKind::Int { signed: true, .. } => "kiln__ok_i64(&kiln__b, (int64_t)kiln__r);".into(),
        NativeKind::Int { signed: false, .. } => {
            "kiln__ok_u64(&kiln__b, (uint64_t)kiln__r);".to_owned()
        }
        NativeKind::Float(float) => format!(
            "kiln__ok_double(&kiln__b, (double)kiln__r, {}, \"{function}\");",
            u8::from(float == FloatKind::Float)
        ),
        NativeKind::Bool => "kiln__ok_bool(&kiln__b, kiln__r ? 1 : 0);".to_owned(),
        NativeKind::Char => {
            "kiln__ok_bytes(&kiln__b, (const unsigned char *)&kiln__r, 1);".to_owned()
        }
        NativeKind::CString => "kiln__ok_cstr(&kiln__b, kiln__r);".to_owned(),
        NativeKind::StdString => "if (kiln__rnull) kiln__ok(&kiln__b, \"null\"); else \
             kiln__ok_bytes(&kiln__b, (const unsigned char *)kiln__r.data(), kiln__r.size());"
            .to_owned(),
    }
}

/// The dispatcher for a signature. Only names checked by `prepare` (identifiers joined by
/// `::`) are written into it; argument values travel in the frame.
pub(super) fn generate(sig: &NativeSignature, source: SignatureSource) -> String {
    let lang = sig.language;
    let cpp = lang == NativeLanguage::Cpp;
    let params = sig.c_params();
    let max = params.len();
    let min = sig.min_count();
    let mut out = String::with_capacity(RUNTIME.len() + 2048);
    out.push_str(&format!(
        "/* Generated by Kiln: serves kiln-call/1 calls of {} on fd 3. */\n",
        sig.function
    ));
    out.push_str(RUNTIME);
    out.push_str("#define main kiln__user_main\n");
    out.push_str(&format!("#include \"{}\"\n", lang.user_file()));
    out.push_str("#undef main\n\n");

    out.push_str("static void kiln__serve(const unsigned char *kiln__frame, size_t kiln__len) {\n");
    out.push_str("    kiln__in kiln__c;\n");
    out.push_str(
        "    kiln__c.p = kiln__frame;\n    kiln__c.len = kiln__len;\n    kiln__c.pos = 0;\n",
    );
    out.push_str("    const unsigned char *kiln__id;\n    uint32_t kiln__idlen;\n");
    out.push_str("    uint32_t kiln__n = kiln__open(&kiln__c, &kiln__id, &kiln__idlen);\n");
    let count_check = if min == max {
        format!("kiln__n != {max}")
    } else if min == 0 {
        format!("kiln__n > {max}")
    } else {
        format!("kiln__n < {min} || kiln__n > {max}")
    };
    out.push_str(&format!(
        "    if ({count_check}) kiln__fatal(\"malformed call frame: wrong argument count\");\n"
    ));
    for (index, param) in params.iter().enumerate() {
        let local = local_type(param.ty.kind, lang);
        let init = if param.ty.kind == NativeKind::StdString {
            String::new()
        } else {
            " = 0".to_owned()
        };
        out.push_str(&format!("    {local} kiln__a{index}{init};\n"));
        out.push_str(&format!(
            "    if (kiln__n > {index}) kiln__a{index} = {};\n",
            decode(param.ty.kind, &local)
        ));
    }
    out.push_str("    kiln__close(&kiln__c);\n");
    match sig.returns.kind {
        NativeKind::Void => {}
        NativeKind::StdString => {
            out.push_str("    std::string kiln__r;\n    bool kiln__rnull = false;\n");
        }
        NativeKind::CString => out.push_str("    const char *kiln__r = 0;\n"),
        kind => out.push_str(&format!("    {} kiln__r = 0;\n", local_type(kind, lang))),
    }
    let indent = if cpp { "        " } else { "    " };
    if cpp {
        out.push_str("    std::string kiln__etype, kiln__emsg;\n    bool kiln__threw = false;\n");
        out.push_str("    try {\n");
    }
    let call = |count: usize| {
        let args: Vec<String> = (0..count).map(|index| format!("kiln__a{index}")).collect();
        let call = format!("{}({})", sig.call, args.join(", "));
        match sig.returns.kind {
            NativeKind::Void => format!("{call};"),
            NativeKind::StdString => format!("kiln__set_str(kiln__r, kiln__rnull, {call});"),
            _ => format!("kiln__r = {call};"),
        }
    };
    if min == max {
        out.push_str(&format!("{indent}{}\n", call(max)));
    } else {
        out.push_str(&format!("{indent}switch (kiln__n) {{\n"));
        for count in (min..=max).rev() {
            out.push_str(&format!("{indent}case {count}: {} break;\n", call(count)));
        }
        out.push_str(&format!("{indent}}}\n"));
    }
    if cpp {
        out.push_str("    } catch (...) {\n");
        out.push_str("        kiln__threw = true;\n");
        out.push_str("        kiln__describe_exception(kiln__etype, kiln__emsg);\n");
        out.push_str("    }\n");
    }
    out.push_str("    kiln__flush_output();\n");
    out.push_str("    kiln__buf kiln__b;\n");
    out.push_str("    kiln__begin(&kiln__b, kiln__id, kiln__idlen);\n");
    let emit = emit_result(sig.returns.kind, &sig.function);
    if cpp {
        out.push_str(
            "    if (kiln__threw) kiln__error(&kiln__b, kiln__etype.c_str(), \
             kiln__emsg.data(), kiln__emsg.size());\n",
        );
        out.push_str(&format!("    else {{ {emit} }}\n"));
    } else {
        out.push_str(&format!("    {emit}\n"));
    }
    out.push_str(&format!(
        "    kiln__send(&kiln__b, \"{}\");\n}}\n",
        source.as_str()
    ));
    out
}
