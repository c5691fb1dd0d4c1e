//! Binding a call's JSON arguments to a native signature and encoding the call frame's payload
//! (the format is described in the parent module).

use serde_json::{Map, Number, Value};

use super::super::schema::json_type_name;
use super::{FloatKind, NativeError, NativeKind, NativeParam, NativeSignature};

/// The payload's magic: a native call frame, version 1.
pub(super) const MAGIC: &[u8; 4] = b"KCF1";

/// Where a parameter's value comes from.
enum Slot<'a> {
    /// An argument or the schema's default.
    Value(&'a Value),
    /// Left to the C++ default argument.
    CppDefault,
}

fn argument_error(message: String) -> NativeError {
    NativeError::ArgumentError(message)
}

/// Binds `args` in order and `kwargs` by parameter name, checks each value against its
/// parameter's C type (and schema type) and encodes the call frame's payload. The frame on the
/// wire is this payload behind a `u32` big-endian length.
pub fn encode_call(
    sig: &NativeSignature,
    id: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Vec<u8>, NativeError> {
    let function = &sig.function;
    let arity = sig.params.len();
    if args.len() > arity {
        return Err(argument_error(format!(
            "{function} takes {arity} argument{} but {} were given",
            if arity == 1 { "" } else { "s" },
            args.len()
        )));
    }
    let mut given: Vec<Option<&Value>> = vec![None; arity];
    for (slot, value) in given.iter_mut().zip(args) {
        *slot = Some(value);
    }
    for (keyword, value) in kwargs {
        let Some(index) = sig.params.iter().position(|param| &param.name == keyword) else {
            return Err(argument_error(format!(
                "{function} has no parameter named '{keyword}' (C and C++ functions take no \
                 other keywords)"
            )));
        };
        if given[index].is_some() {
            return Err(argument_error(format!(
                "{function} got two values for argument '{keyword}', by position and by keyword"
            )));
        }
        given[index] = Some(value);
    }
    let mut slots: Vec<(&NativeParam, Slot<'_>)> = Vec::with_capacity(arity);
    for (param, value) in sig.params.iter().zip(given) {
        let slot = match (value, &param.default) {
            (Some(value), _) => Slot::Value(value),
            (None, _) if param.required => {
                return Err(argument_error(format!(
                    "{function} is missing the argument '{}'",
                    param.name
                )))
            }
            (None, Some(default)) => Slot::Value(default),
            (None, None) if param.has_cpp_default => Slot::CppDefault,
            (None, None) => {
                return Err(argument_error(format!(
                    "{function} is missing the argument '{}' (it is optional in the schema, but \
                     without a default C has no value to pass)",
                    param.name
                )))
            }
        };
        slots.push((param, slot));
    }
    slots.sort_by_key(|(param, _)| param.position);
    // C++ fills default arguments from the end: one left out needs all after it left out too.
    let count = slots
        .iter()
        .position(|(_, slot)| matches!(slot, Slot::CppDefault))
        .unwrap_or(slots.len());
    if let Some((param, _)) = slots[count..]
        .iter()
        .find(|(_, slot)| matches!(slot, Slot::Value(_)))
    {
        let (skipped, _) = &slots[count];
        return Err(argument_error(format!(
            "{function}: argument '{}' can be left to its C++ default only if every argument \
             after it is too, but '{}' is given",
            skipped.name, param.name
        )));
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    push_len(&mut out, id.len(), "the call id")?;
    out.extend_from_slice(id.as_bytes());
    push_len(&mut out, count, "the argument count")?;
    for (param, slot) in &slots[..count] {
        if let Slot::Value(value) = slot {
            encode_arg(function, param, value, &mut out)?;
        }
    }
    Ok(out)
}

fn push_len(out: &mut Vec<u8>, len: usize, what: &str) -> Result<(), NativeError> {
    let len = u32::try_from(len)
        .map_err(|_| argument_error(format!("{what} is too large for a call frame")))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The smallest and largest value of an integer type.
fn int_range(signed: bool, bits: u8) -> (i128, i128) {
    let bits = u32::from(bits);
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// A JSON number's integral value (`2.0` counts; `2.5` does not).
fn integral(number: &Number) -> Option<i128> {
    if let Some(value) = number.as_i64() {
        return Some(value.into());
    }
    if let Some(value) = number.as_u64() {
        return Some(value.into());
    }
    let value = number.as_f64()?;
    // The cast saturates, and anything that large is out of every C type's range anyway.
    (value.is_finite() && value.fract() == 0.0).then_some(value as i128)
}

/// Checks one value against its parameter and appends its tag and encoding.
pub(super) fn encode_arg(
    function: &str,
    param: &NativeParam,
    value: &Value,
    out: &mut Vec<u8>,
) -> Result<(), NativeError> {
    let name = &param.name;
    let spelling = &param.ty.spelling;
    let expects = |what: &str| {
        argument_error(format!(
            "argument '{name}' of {function} expects {what}, got {}",
            describe(value)
        ))
    };
    if let Some(ty) = param.schema_type {
        if !ty.matches(value) {
            return Err(expects(&format!("{ty} (its schema type)")));
        }
    }
    match param.ty.kind {
        NativeKind::Int { signed, bits } => {
            let Value::Number(number) = value else {
                return Err(expects("an integer"));
            };
            let Some(integer) = integral(number) else {
                return Err(expects("an integer"));
            };
            let (min, max) = int_range(signed, bits);
            if integer < min || integer > max {
                return Err(argument_error(format!(
                    "argument '{name}' of {function} ({spelling}) must be between {min} and \
                     {max}, got {integer}"
                )));
            }
            // In range, so the conversions cannot fail; the errors are unreachable.
            let out_of_range = || expects("an integer in range");
            if signed {
                out.push(b'i');
                let integer = i64::try_from(integer).map_err(|_| out_of_range())?;
                out.extend_from_slice(&integer.to_le_bytes());
            } else {
                out.push(b'u');
                let integer = u64::try_from(integer).map_err(|_| out_of_range())?;
                out.extend_from_slice(&integer.to_le_bytes());
            }
        }
        NativeKind::Float(kind) => {
            let Some(number) = value.as_f64() else {
                return Err(expects("a number"));
            };
            if kind == FloatKind::Float && number.abs() > f64::from(f32::MAX) {
                return Err(argument_error(format!(
                    "argument '{name}' of {function} (float) must be at most {:e} in magnitude, \
                     got {number}",
                    f32::MAX
                )));
            }
            out.push(b'f');
            out.extend_from_slice(&number.to_bits().to_le_bytes());
        }
        NativeKind::Bool => {
            let Value::Bool(flag) = value else {
                return Err(expects("a boolean"));
            };
            out.push(b'b');
            out.push(u8::from(*flag));
        }
        NativeKind::Char => {
            let Value::String(text) = value else {
                return Err(expects("a one-character string (a char)"));
            };
            let [byte] = text.as_bytes() else {
                return Err(argument_error(format!(
                    "argument '{name}' of {function} is a char and expects a one-byte string, \
                     got a string of {} bytes",
                    text.len()
                )));
            };
            out.push(b'c');
            out.push(*byte);
        }
        NativeKind::CString => match value {
            Value::Null => out.push(b'n'),
            Value::String(text) => {
                if text.contains('\0') {
                    return Err(argument_error(format!(
                        "argument '{name}' of {function} is a {spelling} and cannot hold a NUL \
                         character"
                    )));
                }
                out.push(b's');
                push_len(out, text.len(), &format!("argument '{name}'"))?;
                out.extend_from_slice(text.as_bytes());
            }
            _ => return Err(expects("a string")),
        },
        NativeKind::StdString => {
            let Value::String(text) = value else {
                return Err(expects("a string"));
            };
            out.push(b's');
            push_len(out, text.len(), &format!("argument '{name}'"))?;
            out.extend_from_slice(text.as_bytes());
        }
        NativeKind::Void => {
            return Err(argument_error(format!(
                "argument '{name}' of {function} is void"
            )))
        }
    }
    Ok(())
}

/// A value for messages: its JSON type, with the number itself when it is one.
fn describe(value: &Value) -> String {
    match value {
        Value::Number(number) => format!("{} {number}", json_type_name(value)),
        _ => json_type_name(value).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::super::schema::ParamType;
    use super::super::{NativeLanguage, NativeType};
    use super::*;

    fn param(name: &str, kind: NativeKind, spelling: &str, position: usize) -> NativeParam {
        NativeParam {
            name: name.to_owned(),
            ty: NativeType {
                kind,
                spelling: spelling.to_owned(),
            },
            position,
            required: true,
            default: None,
            has_cpp_default: false,
            schema_type: None,
        }
    }

    fn int() -> NativeKind {
        NativeKind::Int {
            signed: true,
            bits: 32,
        }
    }

    fn signature(params: Vec<NativeParam>) -> NativeSignature {
        NativeSignature {
            language: NativeLanguage::C,
            function: "add".to_owned(),
            call: "add".to_owned(),
            returns: NativeType {
                kind: int(),
                spelling: "int".to_owned(),
            },
            params,
        }
    }

    fn add() -> NativeSignature {
        signature(vec![
            param("a", int(), "int", 0),
            param("b", int(), "int", 1),
        ])
    }

    fn kwargs(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn error(sig: &NativeSignature, args: Value, kw: Value) -> String {
        let args = args.as_array().cloned().unwrap_or_default();
        encode_call(sig, "id", &args, &kwargs(kw))
            .expect_err("the call is refused")
            .to_string()
    }

    #[test]
    fn encodes_the_documented_layout() {
        let sig = signature(vec![
            param("a", int(), "int", 0),
            param(
                "u",
                NativeKind::Int {
                    signed: false,
                    bits: 64,
                },
                "size_t",
                1,
            ),
            param("x", NativeKind::Float(FloatKind::Double), "double", 2),
            param("f", NativeKind::Bool, "bool", 3),
            param("c", NativeKind::Char, "char", 4),
            param("s", NativeKind::CString, "const char *", 5),
            param("n", NativeKind::CString, "const char *", 6),
        ]);
        let payload = encode_call(
            &sig,
            "ab",
            &[
                json!(-2),
                json!(7),
                json!(0.5),
                json!(true),
                json!("z"),
                json!("hé"),
            ],
            &kwargs(json!({"n": null})),
        )
        .expect("encodes");
        let mut expected = b"KCF1".to_vec();
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(b"ab");
        expected.extend_from_slice(&7u32.to_le_bytes());
        expected.push(b'i');
        expected.extend_from_slice(&(-2i64).to_le_bytes());
        expected.push(b'u');
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.push(b'f');
        expected.extend_from_slice(&0.5f64.to_bits().to_le_bytes());
        expected.extend_from_slice(b"b\x01cz");
        expected.push(b's');
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice("hé".as_bytes());
        expected.push(b'n');
        assert_eq!(payload, expected);
    }

    #[test]
    fn binds_keywords_by_name_in_c_order() {
        let by_keyword = encode_call(&add(), "id", &[json!(1)], &kwargs(json!({"b": 2})));
        let by_position = encode_call(&add(), "id", &[json!(1), json!(2)], &Map::new());
        assert_eq!(by_keyword, by_position);
        // A schema that lists b first still passes a first.
        let mut swapped = add();
        swapped.params.reverse();
        let swapped = encode_call(&swapped, "id", &[json!(2), json!(1)], &Map::new());
        assert_eq!(swapped, by_position);
    }

    #[test]
    fn binding_errors_name_the_argument() {
        let sig = add();
        assert_eq!(
            error(&sig, json!([1, 2, 3]), json!({})),
            "add takes 2 arguments but 3 were given"
        );
        assert_eq!(
            error(&sig, json!([1]), json!({})),
            "add is missing the argument 'b'"
        );
        assert!(error(&sig, json!([1, 2]), json!({"c": 3})).contains("no parameter named 'c'"));
        assert!(error(&sig, json!([1]), json!({"a": 3})).contains("two values for argument 'a'"));
    }

    #[test]
    fn values_are_checked_against_c_types() {
        let sig = add();
        assert_eq!(
            error(&sig, json!(["2", 3]), json!({})),
            "argument 'a' of add expects an integer, got string"
        );
        assert_eq!(
            error(&sig, json!([2.5, 3]), json!({})),
            "argument 'a' of add expects an integer, got number 2.5"
        );
        assert_eq!(
            error(&sig, json!([3000000000u64, 3]), json!({})),
            "argument 'a' of add (int) must be between -2147483648 and 2147483647, got 3000000000"
        );
        assert!(encode_call(&sig, "id", &[json!(2.0), json!(-3)], &Map::new()).is_ok());
        let unsigned = signature(vec![param(
            "n",
            NativeKind::Int {
                signed: false,
                bits: 8,
            },
            "uint8_t",
            0,
        )]);
        assert!(error(&unsigned, json!([-1]), json!({})).contains("between 0 and 255"));
        let text = signature(vec![param("s", NativeKind::CString, "char *", 0)]);
        assert!(error(&text, json!(["a\u{0}b"]), json!({})).contains("NUL"));
        assert!(error(&text, json!([1]), json!({})).contains("expects a string, got integer"));
        let flag = signature(vec![param("f", NativeKind::Bool, "bool", 0)]);
        assert!(error(&flag, json!([1]), json!({})).contains("expects a boolean, got integer"));
        let single = signature(vec![param("c", NativeKind::Char, "char", 0)]);
        assert!(error(&single, json!(["ab"]), json!({})).contains("one-byte string"));
        let float = signature(vec![param(
            "x",
            NativeKind::Float(FloatKind::Float),
            "float",
            0,
        )]);
        assert!(error(&float, json!([1e300]), json!({})).contains("magnitude"));
        assert!(error(&float, json!([true]), json!({})).contains("expects a number"));
        let mut typed = add();
        typed.params[0].schema_type = Some(ParamType::String);
        assert!(error(&typed, json!([1, 2]), json!({})).contains("(its schema type)"));
    }

    #[test]
    fn defaults_fill_missing_arguments() {
        let mut sig = add();
        sig.params[1].required = false;
        sig.params[1].default = Some(json!(10));
        let defaulted = encode_call(&sig, "id", &[json!(1)], &Map::new());
        let explicit = encode_call(&add(), "id", &[json!(1), json!(10)], &Map::new());
        assert_eq!(defaulted, explicit);
        // C++ defaults shorten the call instead.
        let mut cpp = add();
        cpp.params[0].required = false;
        cpp.params[0].has_cpp_default = true;
        cpp.params[1].required = false;
        cpp.params[1].has_cpp_default = true;
        let none = encode_call(&cpp, "", &[], &Map::new()).expect("encodes");
        assert_eq!(&none[8..12], &0u32.to_le_bytes());
        assert!(error(&cpp, json!([]), json!({"b": 1})).contains("left to its C++ default"));
    }
}
