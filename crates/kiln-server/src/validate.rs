//! Checking a job request field by field, so that every mistake comes back as a 400 naming the
//! field and the reason (or a 413 when the files are too big), never a 500.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::config::ServerConfig;
use kiln_lang::SourceFile;

/// One problem with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Detail {
    /// The field, dotted (`files.0.name`).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 400 with the details.
    Invalid(Vec<Detail>),
    /// 413: the files' decoded bytes exceed the cap.
    TooLarge {
        /// Their total.
        bytes: usize,
        /// The cap.
        max: usize,
    },
}

/// Limits a client may ask for (contract names, plus Kiln's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsOverride {
    /// `wallTimeMs`.
    pub wall_time_ms: Option<u64>,
    /// `idleMs`.
    pub idle_ms: Option<u64>,
    /// `cpuMs`.
    pub cpu_ms: Option<u64>,
    /// `memoryMb`.
    pub memory_mb: Option<u64>,
    /// `pids`.
    pub pids: Option<u64>,
    /// `outputKb`.
    pub output_kb: Option<u64>,
    /// `fileSizeKb` (Kiln).
    pub file_size_kb: Option<u64>,
    /// `openFiles` (Kiln).
    pub open_files: Option<u64>,
}

/// A checked `POST /v1/execute` (or `/v1/run`) body.
#[derive(Debug, Clone)]
pub struct ExecuteInput {
    /// Language name or alias.
    pub language: String,
    /// Requested version.
    pub version: Option<String>,
    /// Decoded files, in the order given.
    pub files: Vec<SourceFile>,
    /// Requested limits.
    pub limits: LimitsOverride,
    /// Keep stdout and stderr for `GET /output`.
    pub collect_output: bool,
    /// stdin given up front (Kiln).
    pub stdin: Option<String>,
    /// Program arguments (Kiln).
    pub args: Vec<String>,
    /// Start without waiting for `POST /start` (Kiln).
    pub auto_start: bool,
}

struct Checker<'a> {
    details: Vec<Detail>,
    cfg: &'a ServerConfig,
}

impl Checker<'_> {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.details.push(Detail {
            path: path.into(),
            message: message.into(),
        });
    }

    fn file_name(&mut self, path: &str, name: &str) {
        let max = self.cfg.max_file_name_len;
        if name.is_empty() {
            self.fail(path, "must not be empty");
        } else if name.chars().count() > max {
            self.fail(path, format!("must be at most {max} characters"));
        } else if name.contains('\0') {
            self.fail(path, "must not contain a NUL character");
        } else if name.starts_with('/') {
            self.fail(path, "must be a relative path");
        } else if name.split('/').any(|c| c == "..") {
            self.fail(path, "must not contain \"..\"");
        } else if name.split('/').any(|c| c.is_empty() || c == ".") || name.ends_with('/') {
            self.fail(path, "must be a path of plain names");
        } else if name.split('/').any(|c| c.len() > 255) {
            self.fail(path, "has a path component longer than 255 bytes");
        }
    }
}

fn positive(v: &Value) -> Option<u64> {
    v.as_u64().filter(|n| *n >= 1)
}

/// Checks a request body.
pub fn parse_execute(body: &Value, cfg: &ServerConfig) -> Result<ExecuteInput, Rejection> {
    let mut c = Checker {
        details: Vec::new(),
        cfg,
    };
    let Some(obj) = body.as_object() else {
        c.fail("", "must be a JSON object");
        return Err(Rejection::Invalid(c.details));
    };
    let known = [
        "language",
        "version",
        "files",
        "limits",
        "collectOutput",
        "stdin",
        "args",
        "autoStart",
    ];
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        c.fail(key.clone(), "is not a known field");
    }
    let language = match obj.get("language") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            c.fail("language", "must not be empty");
            String::new()
        }
        Some(_) => {
            c.fail("language", "must be a string");
            String::new()
        }
        None => {
            c.fail("language", "is required");
            String::new()
        }
    };
    let version = match obj.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            c.fail("version", "must be a string");
            None
        }
    };
    let mut files = Vec::new();
    let mut total = 0usize;
    match obj.get("files") {
        Some(Value::Array(list)) if list.is_empty() => {
            c.fail("files", "must hold at least one file")
        }
        Some(Value::Array(list)) if list.len() > cfg.max_files => c.fail(
            "files",
            format!("must hold at most {} files", cfg.max_files),
        ),
        Some(Value::Array(list)) => {
            for (i, f) in list.iter().enumerate() {
                let at = |field: &str| format!("files.{i}.{field}");
                let Some(f) = f.as_object() else {
                    c.fail(format!("files.{i}"), "must be an object");
                    continue;
                };
                for key in f
                    .keys()
                    .filter(|k| !["name", "content", "encoding", "ref"].contains(&k.as_str()))
                {
                    c.fail(at(key), "is not a known field");
                }
                let name = match f.get("name") {
                    Some(Value::String(n)) => {
                        c.file_name(&at("name"), n);
                        n.clone()
                    }
                    Some(_) => {
                        c.fail(at("name"), "must be a string");
                        continue;
                    }
                    None => {
                        c.fail(at("name"), "is required");
                        continue;
                    }
                };
                if files.iter().any(|s: &SourceFile| s.name == name) {
                    c.fail(at("name"), "is the same as an earlier file's");
                }
                if f.contains_key("ref") {
                    c.fail(at("ref"), "content by reference needs a blob store, which this server does not keep; send content");
                    continue;
                }
                let encoding = match f.get("encoding") {
                    None | Some(Value::Null) => "utf8",
                    Some(Value::String(e)) if e == "utf8" || e == "base64" => e.as_str(),
                    Some(_) => {
                        c.fail(at("encoding"), "must be \"utf8\" or \"base64\"");
                        continue;
                    }
                };
                let content = match f.get("content") {
                    Some(Value::String(s)) => s,
                    Some(_) => {
                        c.fail(at("content"), "must be a string");
                        continue;
                    }
                    None => {
                        c.fail(at("content"), "is required");
                        continue;
                    }
                };
                let bytes = if encoding == "base64" {
                    match base64::engine::general_purpose::STANDARD.decode(content) {
                        Ok(b) => b,
                        Err(e) => {
                            c.fail(at("content"), format!("is not valid base64: {e}"));
                            continue;
                        }
                    }
                } else {
                    content.as_bytes().to_vec()
                };
                total += bytes.len();
                files.push(SourceFile {
                    name,
                    content: bytes,
                });
            }
        }
        Some(_) => c.fail("files", "must be an array"),
        None => c.fail("files", "is required"),
    }
    let mut limits = LimitsOverride::default();
    match obj.get("limits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(l)) => {
            for (key, v) in l {
                let slot = match key.as_str() {
                    "wallTimeMs" => &mut limits.wall_time_ms,
                    "idleMs" => &mut limits.idle_ms,
                    "cpuMs" => &mut limits.cpu_ms,
                    "memoryMb" => &mut limits.memory_mb,
                    "pids" => &mut limits.pids,
                    "outputKb" => &mut limits.output_kb,
                    "fileSizeKb" => &mut limits.file_size_kb,
                    "openFiles" => &mut limits.open_files,
                    // Accepted for compatibility: Kiln keeps no artifacts.
                    "maxArtifacts" | "maxArtifactBytes" => {
                        if positive(v).is_none() {
                            c.fail(format!("limits.{key}"), "must be an integer of at least 1");
                        }
                        continue;
                    }
                    "network" => {
                        if v != "none" {
                            c.fail(
                                "limits.network",
                                "must be \"none\" (the only network offered)",
                            );
                        }
                        continue;
                    }
                    _ => {
                        c.fail(format!("limits.{key}"), "is not a known limit");
                        continue;
                    }
                };
                match positive(v) {
                    Some(n) => *slot = Some(n),
                    None => c.fail(format!("limits.{key}"), "must be an integer of at least 1"),
                }
            }
        }
        Some(_) => c.fail("limits", "must be an object"),
    }
    let collect_output = match obj.get("collectOutput") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            c.fail("collectOutput", "must be a boolean");
            false
        }
    };
    let auto_start = match obj.get("autoStart") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            c.fail("autoStart", "must be a boolean");
            false
        }
    };
    let stdin = match obj.get("stdin") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            c.fail("stdin", "must be a string");
            None
        }
    };
    let args = match obj.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(_) => {
            c.fail("args", "must be an array of strings");
            Vec::new()
        }
    };
    if !c.details.is_empty() {
        return Err(Rejection::Invalid(c.details));
    }
    if total > cfg.max_files_bytes {
        return Err(Rejection::TooLarge {
            bytes: total,
            max: cfg.max_files_bytes,
        });
    }
    Ok(ExecuteInput {
        language,
        version,
        files,
        limits,
        collect_output,
        stdin,
        args,
        auto_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn details(body: Value) -> Vec<Detail> {
        match parse_execute(&body, &ServerConfig::default()) {
            Err(Rejection::Invalid(d)) => d,
            other => panic!("{body} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_good_request_is_decoded() {
        let body = json!({"language": "py", "files": [
            {"name": "main.py", "content": "print(1)"},
            {"name": "data/x.bin", "content": "AAE=", "encoding": "base64"}
        ], "limits": {"cpuMs": 500, "maxArtifacts": 3}, "collectOutput": true});
        let input = parse_execute(&body, &ServerConfig::default()).unwrap();
        assert_eq!(input.files[1].content, vec![0, 1]);
        assert_eq!(input.limits.cpu_ms, Some(500));
        assert!(input.collect_output);
    }

    #[test]
    fn every_bad_field_is_named() {
        let d = details(json!({"files": []}));
        assert_eq!(d[0].path, "language");
        assert_eq!(d[1].path, "files");
        let cases = [
            ("/etc/passwd", "relative"),
            ("../x", ".."),
            ("a/../../x", ".."),
            ("a\u{0}b", "NUL"),
            ("", "empty"),
        ];
        for (name, why) in cases {
            let d =
                details(json!({"language": "python", "files": [{"name": name, "content": ""}]}));
            assert_eq!(d[0].path, "files.0.name", "{name:?}");
            assert!(d[0].message.contains(why), "{name:?}: {}", d[0].message);
        }
        let long = "a".repeat(256);
        let d = details(json!({"language": "python", "files": [{"name": long, "content": ""}]}));
        assert!(d[0].message.contains("at most 255"));
        let d = details(
            json!({"language": "python", "files": [{"name": "a", "content": "!!", "encoding": "base64"}]}),
        );
        assert_eq!(d[0].path, "files.0.content");
        let d = details(
            json!({"language": "python", "files": [{"name": "a", "content": ""}], "limits": {"cpuMs": 0, "bogus": 1}}),
        );
        assert_eq!(d.len(), 2);
        let d = details(json!([1, 2]));
        assert_eq!(d[0].message, "must be a JSON object");
    }

    #[test]
    fn too_many_bytes_is_413() {
        let cfg = ServerConfig {
            max_files_bytes: 4,
            ..ServerConfig::default()
        };
        let body = json!({"language": "python", "files": [{"name": "a", "content": "12345"}]});
        assert_eq!(
            parse_execute(&body, &cfg).unwrap_err(),
            Rejection::TooLarge { bytes: 5, max: 4 }
        );
    }
}
