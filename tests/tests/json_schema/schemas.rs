//! The JSON Schemas of `docs/schema/`, one per object type tcptrace
//! writes, and what tcptrace printed checked against them with the
//! `jsonschema` crate (draft 2020-12).

use std::{collections::BTreeMap, fs, path::PathBuf};

use jsonschema::Validator;
use serde_json::Value;

use integration_tests::workspace_root;

/// Every object type, as its `"type"` and its schema's file name.
pub const TYPES: [&str; 9] = [
    "state",
    "reset",
    "hist",
    "hist_timewait",
    "closewait_leak",
    "bind_failure",
    "connect_failure",
    "projection",
    "timewait_report",
];

/// `docs/schema/`.
#[must_use]
pub fn schema_dir() -> PathBuf {
    workspace_root().join("docs/schema")
}

/// The schemas, by type, each with its validator.
pub struct Schemas {
    by_type: BTreeMap<String, (Value, Validator)>,
}

impl Schemas {
    /// Every file of `docs/schema/`: valid against the draft 2020-12
    /// meta-schema, named after its type, and one for each of [`TYPES`]
    /// and no other. Panics otherwise.
    #[must_use]
    pub fn load() -> Self {
        let dir = schema_dir();
        let mut by_type = BTreeMap::new();
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .unwrap_or_else(|| panic!("{} is not a .json schema", path.display()))
                .to_owned();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let schema: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
                panic!(
                    "{} is not a valid draft 2020-12 schema: {e}",
                    path.display()
                );
            }
            assert_eq!(
                schema["properties"]["type"]["const"],
                name.as_str(),
                "{} describes another type",
                path.display()
            );
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            by_type.insert(name, (schema, validator));
        }
        let names: Vec<&str> = by_type.keys().map(String::as_str).collect();
        let mut want = TYPES.to_vec();
        want.sort_unstable();
        assert_eq!(
            names,
            want,
            "one schema per object type in {}",
            dir.display()
        );
        Self { by_type }
    }

    /// The schema of `kind`.
    #[must_use]
    pub fn schema(&self, kind: &str) -> &Value {
        &self.by_type[kind].0
    }

    /// Why `v` does not validate: an object of a known `type` that its
    /// schema accepts gives none.
    #[must_use]
    pub fn errors(&self, v: &Value) -> Vec<String> {
        let Some(kind) = v["type"].as_str() else {
            return vec![format!("no string \"type\" in {v}")];
        };
        let Some((_, validator)) = self.by_type.get(kind) else {
            return vec![format!("no schema for type {kind:?}")];
        };
        validator
            .iter_errors(v)
            .map(|e| format!("{kind} at {}: {e}", e.instance_path()))
            .collect()
    }

    /// Every line of `stdout` must be a JSON object its type's schema
    /// accepts; returns them by type. Panics on the first that is not,
    /// with every error.
    #[must_use]
    pub fn check_lines(&self, stdout: &[String]) -> BTreeMap<String, Vec<Value>> {
        let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in stdout {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a stdout line that is not JSON ({e}): {line}"));
            let errors = self.errors(&v);
            assert!(
                errors.is_empty(),
                "a line off its schema:\n{line}\n{}",
                errors.join("\n")
            );
            let kind = v["type"].as_str().unwrap_or_default().to_owned();
            seen.entry(kind).or_default().push(v);
        }
        seen
    }

    /// The negative case: `v` validates, and every change of one key
    /// anywhere in it fails: each key of each object removed, and a key
    /// added to each object (in arrays, the first element's).
    pub fn assert_rejects_changed_keys(&self, v: &Value) {
        let errors = self.errors(v);
        assert!(errors.is_empty(), "{v}\n{}", errors.join("\n"));
        for pointer in object_pointers(v, "") {
            let keys: Vec<String> = v
                .pointer(&pointer)
                .and_then(Value::as_object)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            for key in keys {
                let mut changed = v.clone();
                if let Some(o) = changed.pointer_mut(&pointer).and_then(Value::as_object_mut) {
                    o.remove(&key);
                }
                assert!(
                    !self.errors(&changed).is_empty(),
                    "the schema accepts {v} without {pointer}/{key}"
                );
            }
            let mut changed = v.clone();
            if let Some(o) = changed.pointer_mut(&pointer).and_then(Value::as_object_mut) {
                o.insert("not_in_the_schema".into(), Value::Null);
            }
            assert!(
                !self.errors(&changed).is_empty(),
                "the schema accepts {v} with a key added at {pointer:?}"
            );
        }
    }
}

/// JSON pointers of every object in `v` (arrays: their first element).
fn object_pointers(v: &Value, at: &str) -> Vec<String> {
    match v {
        Value::Object(o) => {
            let mut out = vec![at.to_owned()];
            for (k, x) in o {
                out.extend(object_pointers(x, &format!("{at}/{}", escape(k))));
            }
            out
        }
        Value::Array(a) => a
            .first()
            .map(|x| object_pointers(x, &format!("{at}/0")))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A key as a JSON pointer token.
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// Every object a schema describes is closed: `additionalProperties`
/// false, `required` naming every property, and no object without
/// `properties`. Returns where one is not.
pub fn closed_violations(schema: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(s) = schema.as_object() else {
        return out;
    };
    let is_object = match &s.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        if s.get("additionalProperties") != Some(&Value::Bool(false)) {
            out.push(format!("{at}: additionalProperties is not false"));
        }
        let mut required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        required.sort_unstable();
        let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if required != keys {
            out.push(format!("{at}: required {required:?}, properties {keys:?}"));
        }
        for (k, p) in props {
            out.extend(closed_violations(p, &format!("{at}/properties/{k}")));
        }
    } else if is_object {
        out.push(format!("{at}: an object without properties"));
    }
    for key in ["items", "not"] {
        if let Some(x) = s.get(key) {
            out.extend(closed_violations(x, &format!("{at}/{key}")));
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        for (i, x) in s
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.extend(closed_violations(x, &format!("{at}/{key}/{i}")));
        }
    }
    for (k, x) in s
        .get("$defs")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        out.extend(closed_violations(x, &format!("{at}/$defs/{k}")));
    }
    out
}
