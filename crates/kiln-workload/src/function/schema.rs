//! The explicit signature a function call request may carry (`schema` in `kiln-call/1`).
//!
//! A schema names the function's parameters in order, with an optional JSON type, requiredness
//! and default each, and says whether the function is variadic, takes keywords and what it
//! returns. When present it is the signature (`signatureSource: "schema"`); otherwise each
//! language infers one from the code ([`SignatureSource::Inferred`]) or falls back on its
//! convention ([`SignatureSource::Convention`]). The wire shape is strict: unknown fields are
//! rejected so that a typo does not silently turn into "no constraint".

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A function's explicit signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSchema {
    /// The parameters, in positional order.
    pub params: Vec<ParamSchema>,
    /// Whether the function takes any number of further positional arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variadic: Option<bool>,
    /// Whether the function takes keywords beyond its named parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepts_kwargs: Option<bool>,
    /// The JSON type of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_type: Option<ParamType>,
}

/// One parameter of a [`FunctionSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamSchema {
    /// Its name, which keyword arguments match.
    pub name: String,
    /// The JSON type its value must have; `None` accepts anything.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<ParamType>,
    /// Whether a value must be given; defaults to `true` unless a default is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value a missing argument takes. An explicit `null` is a default (`Some(Null)`),
    /// unlike an absent field.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<Value>,
}

/// The JSON type of a parameter or result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any JSON number.
    Number,
    /// A JSON number without a fractional part.
    Integer,
    /// A JSON string.
    String,
    /// `true` or `false`.
    Boolean,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
    /// `null`.
    Null,
    /// Anything.
    Any,
}

/// Where a call's signature came from, reported in every result frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureSource {
    /// The request's schema.
    Schema,
    /// Inferred from the code.
    Inferred,
    /// The language's convention (nothing else was available).
    Convention,
}

/// A schema that contradicts itself, naming the offending field (`schema.params[1].name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SchemaError {
    /// The field's path, from `schema`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// serde passes `null` to `Option<Value>` as "absent"; a default of `null` is a real default.
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl FunctionSchema {
    /// Checks what serde cannot: names present and unique, requiredness consistent with the
    /// default, defaults of the declared type.
    pub fn validate(&self) -> Result<(), SchemaError> {
        for (index, param) in self.params.iter().enumerate() {
            let field = |name: &str| format!("schema.params[{index}].{name}");
            if param.name.is_empty() {
                return Err(SchemaError {
                    field: field("name"),
                    problem: "empty".to_owned(),
                });
            }
            if param.name.chars().any(char::is_control) {
                return Err(SchemaError {
                    field: field("name"),
                    problem: format!("{:?} contains a control character", param.name),
                });
            }
            if let Some(first) = self.params[..index]
                .iter()
                .position(|earlier| earlier.name == param.name)
            {
                return Err(SchemaError {
                    field: field("name"),
                    problem: format!(
                        "duplicate of schema.params[{first}].name ({:?})",
                        param.name
                    ),
                });
            }
            if param.required == Some(true) && param.default.is_some() {
                return Err(SchemaError {
                    field: field("required"),
                    problem: "true, but a default is given".to_owned(),
                });
            }
            if let (Some(ty), Some(default)) = (param.r#type, &param.default) {
                if !ty.matches(default) {
                    return Err(SchemaError {
                        field: field("default"),
                        problem: format!("expects {ty}, got {}", json_type_name(default)),
                    });
                }
            }
        }
        Ok(())
    }

    /// The parameter of that name.
    pub fn param(&self, name: &str) -> Option<&ParamSchema> {
        self.params.iter().find(|param| param.name == name)
    }
}

impl ParamSchema {
    /// Whether a call must give this parameter a value.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

impl ParamType {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Integer => "integer",
            ParamType::String => "string",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
            ParamType::Null => "null",
            ParamType::Any => "any",
        }
    }

    /// Whether a JSON value has this type. An integer is a number whose value is integral,
    /// so `2.0` is one: JSON does not tell the two spellings apart.
    pub fn matches(self, value: &Value) -> bool {
        match self {
            ParamType::Number => value.is_number(),
            ParamType::Integer => match value {
                Value::Number(number) => {
                    number.is_i64()
                        || number.is_u64()
                        || number
                            .as_f64()
                            .is_some_and(|float| float.is_finite() && float.fract() == 0.0)
                }
                _ => false,
            },
            ParamType::String => value.is_string(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Array => value.is_array(),
            ParamType::Object => value.is_object(),
            ParamType::Null => value.is_null(),
            ParamType::Any => true,
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SignatureSource {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureSource::Schema => "schema",
            SignatureSource::Inferred => "inferred",
            SignatureSource::Convention => "convention",
        }
    }
}

impl fmt::Display for SignatureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type of a value, for messages: `null`, `boolean`, `integer` (an integral number),
/// `number`, `string`, `array` or `object`.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if ParamType::Integer.matches(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> FunctionSchema {
        serde_json::from_value(value).expect("a valid schema")
    }

    #[test]
    fn parses_the_wire_shape() {
        let parsed = schema(json!({
            "params": [
                {"name": "a", "type": "integer"},
                {"name": "b", "type": "number", "required": false},
                {"name": "c", "default": null}
            ],
            "variadic": false,
            "acceptsKwargs": true,
            "returnType": "string"
        }));
        assert_eq!(parsed.params.len(), 3);
        assert_eq!(parsed.params[0].r#type, Some(ParamType::Integer));
        assert!(parsed.params[0].is_required());
        assert!(!parsed.params[1].is_required());
        assert_eq!(parsed.params[2].default, Some(Value::Null));
        assert!(!parsed.params[2].is_required());
        assert_eq!(parsed.accepts_kwargs, Some(true));
        assert_eq!(parsed.return_type, Some(ParamType::String));
        assert_eq!(parsed.param("b").map(|p| p.name.as_str()), Some("b"));
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn an_absent_default_is_not_a_null_default() {
        let parsed = schema(json!({"params": [{"name": "a"}]}));
        assert_eq!(parsed.params[0].default, None);
        let round_trip = serde_json::to_value(&parsed).expect("serializes");
        assert_eq!(round_trip, json!({"params": [{"name": "a"}]}));
    }

    #[test]
    fn rejects_unknown_fields_and_types() {
        let unknown = json!({"params": [], "retrunType": "string"});
        assert!(serde_json::from_value::<FunctionSchema>(unknown).is_err());
        let param = json!({"params": [{"name": "a", "typ": "string"}]});
        assert!(serde_json::from_value::<FunctionSchema>(param).is_err());
        let ty = json!({"params": [{"name": "a", "type": "int"}]});
        assert!(serde_json::from_value::<FunctionSchema>(ty).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let empty = schema(json!({"params": [{"name": "a"}, {"name": ""}]}));
        assert_eq!(
            empty.validate().map_err(|e| e.to_string()),
            Err("schema.params[1].name: empty".to_owned())
        );
        let duplicate = schema(json!({"params": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}));
        let error = duplicate.validate().expect_err("duplicate");
        assert_eq!(error.field, "schema.params[2].name");
        assert!(error.problem.contains("schema.params[0]"), "{error}");
        let contradiction =
            schema(json!({"params": [{"name": "a", "required": true, "default": 1}]}));
        assert_eq!(
            contradiction.validate().map(|_| ()).map_err(|e| e.field),
            Err("schema.params[0].required".to_owned())
        );
        let mistyped =
            schema(json!({"params": [{"name": "a", "type": "integer", "default": 1.5}]}));
        assert_eq!(
            mistyped.validate().map_err(|e| e.to_string()),
            Err("schema.params[0].default: expects integer, got number".to_owned())
        );
    }

    #[test]
    fn types_match_json_values() {
        assert!(ParamType::Integer.matches(&json!(3)));
        assert!(ParamType::Integer.matches(&json!(3.0)));
        assert!(!ParamType::Integer.matches(&json!(3.5)));
        assert!(ParamType::Number.matches(&json!(3.5)));
        assert!(!ParamType::String.matches(&json!(3)));
        assert!(ParamType::Null.matches(&Value::Null));
        assert!(ParamType::Any.matches(&json!({"a": 1})));
        assert_eq!(json_type_name(&json!(-4)), "integer");
        assert_eq!(json_type_name(&json!("x")), "string");
        assert_eq!(
            serde_json::to_value(SignatureSource::Inferred).expect("serializes"),
            json!("inferred")
        );
    }
}
