//! From a declaration (and a schema) to the signature a call binds to: finding the one
//! definition, naming its parameters, merging the schema, or building the call from the schema
//! alone.

use super::super::schema::{FunctionSchema, ParamType};
use super::decl::{self, Decl, ParsedFn, Scanned};
use super::types::TypeContext;
use super::{
    call, FloatKind, NativeError, NativeKind, NativeLanguage, NativeParam, NativeSignature,
    NativeType,
};

/// The function's definition, its types and the expression that calls it.
#[derive(Debug)]
pub(super) struct Located {
    call: String,
    parsed: ParsedFn,
}

/// Finds the one definition of `function` (unqualified names match at any namespace depth).
pub(super) fn locate(
    scanned: &Scanned,
    lang: NativeLanguage,
    function: &str,
) -> Result<Located, NativeError> {
    let qualified = function.contains("::");
    let candidates: Vec<&Decl> = scanned
        .decls
        .iter()
        .filter(|decl| {
            if qualified {
                decl.full_name() == function
            } else {
                decl.name == function && decl.qualifiers.is_empty()
            }
        })
        .collect();
    let definitions: Vec<&Decl> = candidates
        .iter()
        .copied()
        .filter(|decl| decl.definition)
        .collect();
    let Some(first) = definitions.first() else {
        let detail = match candidates.first() {
            Some(declaration) => format!(
                "it is declared on line {} but not defined in the code",
                declaration.line
            ),
            None => "the code defines no function of that name at file scope".to_owned(),
        };
        return Err(NativeError::FunctionNotFound {
            function: function.to_owned(),
            detail,
        });
    };
    if let Some(template) = candidates.iter().find(|decl| decl.template) {
        return Err(NativeError::Overloaded {
            function: function.to_owned(),
            detail: format!("is a template (line {})", template.line),
        });
    }
    let context = TypeContext {
        cpp: lang.is_cpp(),
        aliases: &scanned.aliases,
        using_std: scanned.using_std,
    };
    let parse = |decl: &Decl| decl::parse_decl(decl, context);
    let shape = |decl: &Decl, parsed: &ParsedFn| {
        let types: Vec<String> = parsed
            .params
            .iter()
            .map(|param| match &param.ty {
                Ok(ty) => ty.spelling.clone(),
                Err(why) => why.clone(),
            })
            .collect();
        (decl.full_name(), types, parsed.variadic)
    };
    let mut parsed = parse(first);
    let first_shape = shape(first, &parsed);
    // The same definition twice is #if/#else alternatives the lexer could not choose between;
    // different ones are overloads.
    if let Some(other) = definitions[1..]
        .iter()
        .find(|decl| shape(decl, &parse(decl)) != first_shape)
    {
        if other.full_name() != first.full_name() {
            return Err(NativeError::FunctionNotFound {
                function: function.to_owned(),
                detail: format!(
                    "both {} and {} are defined; give the qualified name",
                    first.full_name(),
                    other.full_name()
                ),
            });
        }
        return Err(NativeError::Overloaded {
            function: function.to_owned(),
            detail: format!(
                "is overloaded (defined on lines {} and {})",
                first.line, other.line
            ),
        });
    }
    // Prototypes may name parameters the definition leaves unnamed, and C++ default
    // arguments are written on the first declaration.
    for decl in &candidates {
        if decl.full_name() != first.full_name() {
            continue;
        }
        let other = parse(decl);
        if other.params.len() != parsed.params.len() {
            continue;
        }
        for (param, other) in parsed.params.iter_mut().zip(other.params) {
            if param.name.is_none() {
                param.name = other.name;
            }
            param.has_default |= other.has_default;
        }
    }
    let mut path = first.scope.clone();
    path.extend(first.qualifiers.iter().cloned());
    path.push(first.name.clone());
    Ok(Located {
        call: call_expression(&path.join("::")),
        parsed,
    })
}

/// The dispatcher renames the user's `main` (it has its own), so a call of `main` is a call of
/// the renamed function.
fn call_expression(path: &str) -> String {
    path.split("::")
        .map(|part| {
            if part == "main" {
                "kiln__user_main"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("::")
}

/// The signature as declared.
pub(super) fn inferred(
    lang: NativeLanguage,
    function: &str,
    located: &Located,
) -> Result<NativeSignature, NativeError> {
    let unsupported = |detail: String| NativeError::UnsupportedSignature {
        function: function.to_owned(),
        detail,
    };
    let returns = located
        .parsed
        .returns
        .clone()
        .map_err(|why| unsupported(format!("the return type: {why}")))?;
    if located.parsed.variadic {
        return Err(unsupported(
            "it is variadic (...), and a C call needs a fixed list of typed arguments; give a \
             schema with every parameter's type"
                .to_owned(),
        ));
    }
    let mut params = Vec::new();
    for (position, param) in located.parsed.params.iter().enumerate() {
        let name = param
            .name
            .clone()
            .unwrap_or_else(|| format!("arg{position}"));
        let ty = param
            .ty
            .clone()
            .map_err(|why| unsupported(format!("parameter '{name}': {why}")))?;
        params.push(NativeParam {
            name,
            ty,
            position,
            required: !param.has_default,
            default: None,
            has_cpp_default: param.has_default,
            schema_type: None,
        });
    }
    Ok(NativeSignature {
        language: lang,
        function: function.to_owned(),
        call: located.call.clone(),
        returns,
        params,
    })
}

/// Whether a JSON type can be passed as (or returned from) a C type.
fn fits(ty: ParamType, kind: NativeKind) -> bool {
    matches!(
        (ty, kind),
        (ParamType::Any, _)
            | (
                ParamType::Integer | ParamType::Number,
                NativeKind::Int { .. } | NativeKind::Float(_)
            )
            | (ParamType::Boolean, NativeKind::Bool)
            | (
                ParamType::String,
                NativeKind::Char | NativeKind::CString | NativeKind::StdString
            )
            | (ParamType::Null, NativeKind::Void)
    )
}

/// The declared signature with the schema's names, order, requiredness and defaults. The
/// schema's parameters are matched to the declaration's by name when they use the same names,
/// else by position (the schema renames them).
pub(super) fn merge(
    base: NativeSignature,
    schema: &FunctionSchema,
) -> Result<NativeSignature, NativeError> {
    let function = base.function.clone();
    if schema.params.len() != base.params.len() {
        return Err(NativeError::Schema(format!(
            "schema.params lists {} parameter{} but {function} takes {}",
            schema.params.len(),
            if schema.params.len() == 1 { "" } else { "s" },
            base.params.len()
        )));
    }
    let by_name = schema.params.iter().all(|param| {
        base.params
            .iter()
            .any(|declared| declared.name == param.name)
    });
    let mut params = Vec::new();
    for (index, param) in schema.params.iter().enumerate() {
        let declared = if by_name {
            base.params
                .iter()
                .find(|declared| declared.name == param.name)
        } else {
            base.params.get(index)
        };
        let Some(declared) = declared else {
            return Err(NativeError::Schema(format!(
                "schema.params[{index}] matches no parameter of {function}"
            )));
        };
        if let Some(ty) = param.r#type.filter(|ty| !fits(*ty, declared.ty.kind)) {
            return Err(NativeError::Schema(format!(
                "schema.params[{index}].type: {ty} does not fit parameter '{}' of {function}, \
                 a {}",
                declared.name, declared.ty.spelling
            )));
        }
        let merged = NativeParam {
            name: param.name.clone(),
            ty: declared.ty.clone(),
            position: declared.position,
            required: param
                .required
                .unwrap_or(param.default.is_none() && !declared.has_cpp_default),
            default: param.default.clone(),
            has_cpp_default: declared.has_cpp_default,
            schema_type: param.r#type,
        };
        check_default(&function, index, &merged)?;
        params.push(merged);
    }
    if let Some(ty) = schema
        .return_type
        .filter(|ty| !fits(*ty, base.returns.kind))
    {
        return Err(NativeError::Schema(format!(
            "schema.returnType: {ty} does not fit {function}'s return type, {}",
            base.returns.spelling
        )));
    }
    Ok(NativeSignature { params, ..base })
}

/// A default must be a valid argument, which is easier to hear about from the schema's field.
fn check_default(function: &str, index: usize, param: &NativeParam) -> Result<(), NativeError> {
    let Some(default) = &param.default else {
        return Ok(());
    };
    call::encode_arg(function, param, default, &mut Vec::new())
        .map_err(|error| NativeError::Schema(format!("schema.params[{index}].default: {error}")))
}

/// The call built from the schema alone, if it types every parameter and the result with a
/// type C has (`None` otherwise: the caller reports why the declaration could not be used).
pub(super) fn from_schema(
    lang: NativeLanguage,
    function: &str,
    schema: &FunctionSchema,
) -> Option<Result<NativeSignature, NativeError>> {
    let param_type = |ty: ParamType| match ty {
        ParamType::Number => Some(NativeType::new(
            NativeKind::Float(FloatKind::Double),
            "double",
        )),
        ParamType::Integer => Some(NativeType::new(
            NativeKind::Int {
                signed: true,
                bits: 64,
            },
            "long long",
        )),
        ParamType::String => Some(NativeType::new(NativeKind::CString, "char *")),
        ParamType::Boolean => Some(NativeType::new(NativeKind::Bool, "bool")),
        _ => None,
    };
    let returns = match schema.return_type? {
        ParamType::Null => NativeType::new(NativeKind::Void, "void"),
        // In C++ the result may be a std::string or a char *; the dispatcher takes both.
        ParamType::String if lang.is_cpp() => NativeType::new(NativeKind::StdString, "std::string"),
        ParamType::String => NativeType::new(NativeKind::CString, "const char *"),
        other => param_type(other)?,
    };
    let mut params = Vec::new();
    for (position, param) in schema.params.iter().enumerate() {
        let merged = NativeParam {
            name: param.name.clone(),
            ty: param_type(param.r#type?)?,
            position,
            required: param.is_required(),
            default: param.default.clone(),
            has_cpp_default: false,
            schema_type: param.r#type,
        };
        if let Err(error) = check_default(function, position, &merged) {
            return Some(Err(error));
        }
        params.push(merged);
    }
    Some(Ok(NativeSignature {
        language: lang,
        function: function.to_owned(),
        call: call_expression(function),
        returns,
        params,
    }))
}
