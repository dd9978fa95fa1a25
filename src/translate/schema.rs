//! Tool schemas between Gemini's OpenAPI-style `Schema` and JSON Schema.
//!
//! Gemini function declarations describe parameters with an OpenAPI 3.0 subset: upper-case
//! `type` names (`OBJECT`, `STRING`, …), `nullable`, `format: enum`, `propertyOrdering`, integer
//! limits that proto-JSON may send as strings. Anthropic and OpenAI want JSON Schema: lower-case
//! types, `null` in a type union, numbers for limits. [`to_json_schema`] converts the first into
//! the second; [`to_gemini`] converts JSON Schema (Claude Code's tool schemas: `$ref`s,
//! `additionalProperties`, `const`, type unions) into the form Gemini accepts. Whatever has no
//! counterpart is dropped and recorded in the [`Loss`] under the schema's path; only pure
//! metadata (`$schema`, `$id`, `$comment`) goes without a report.

use super::Loss;
use serde_json::{json, Map, Value};

/// How deep a schema may nest (and `$ref`s may expand) before the rest is cut (and reported).
const MAX_DEPTH: usize = 32;

/// Keys that only describe the schema document; dropping them changes nothing for a model.
fn is_metadata(key: &str) -> bool {
    matches!(key, "$schema" | "$id" | "$comment")
}

/// A Gemini `Schema` key in camelCase (proto JSON also accepts snake_case).
fn camel(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.contains('_') {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A count that proto JSON may encode as a string (`"5"`).
fn count(v: Value) -> Option<Value> {
    match v {
        Value::Number(n) => Some(Value::Number(n)),
        Value::String(s) => s.trim().parse::<u64>().ok().map(Value::from),
        _ => None,
    }
}

/// Gemini `Schema` → JSON Schema.
pub fn to_json_schema(schema: Value, at: &str, loss: &mut Loss) -> Value {
    gemini_to_json(schema, at, loss, 0)
}

fn gemini_to_json(schema: Value, at: &str, loss: &mut Loss, depth: usize) -> Value {
    let Value::Object(src) = schema else {
        loss.push(at.to_owned());
        return json!({});
    };
    if depth > MAX_DEPTH {
        loss.push(at.to_owned());
        return json!({});
    }
    let mut out = Map::new();
    let mut nullable = false;
    let mut ordering: Option<Vec<String>> = None;
    let mut example = None;
    for (k, v) in src {
        let key = camel(&k).into_owned();
        let here = || format!("{at}.{k}");
        match key.as_str() {
            "type" => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("type_unspecified") | None => loss.push(here()),
                Some(t) => {
                    out.insert("type".into(), Value::String(t.to_owned()));
                }
            },
            "nullable" => nullable = v == Value::Bool(true),
            // `format: enum` only says "the values are in `enum`"; JSON Schema needs no marker.
            "format" if v.as_str() == Some("enum") => {}
            "format" | "title" | "description" | "pattern" | "enum" | "required" | "default"
            | "minimum" | "maximum" => {
                out.insert(key, v);
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" => match count(v) {
                Some(n) => {
                    out.insert(key, n);
                }
                None => loss.push(here()),
            },
            "example" => example = Some(v),
            "propertyOrdering" => {
                ordering = v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                });
            }
            "items" => {
                out.insert(key, gemini_to_json(v, &here(), loss, depth + 1));
            }
            "properties" => {
                let props: Map<String, Value> = match v {
                    Value::Object(p) => p
                        .into_iter()
                        .map(|(name, s)| {
                            let path = format!("{at}.{k}.{name}");
                            (name, gemini_to_json(s, &path, loss, depth + 1))
                        })
                        .collect(),
                    _ => {
                        loss.push(here());
                        continue;
                    }
                };
                out.insert(key, Value::Object(props));
            }
            "anyOf" => match v {
                Value::Array(list) => {
                    let list = list
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| gemini_to_json(s, &format!("{at}.{k}[{i}]"), loss, depth + 1))
                        .collect();
                    out.insert(key, Value::Array(list));
                }
                _ => loss.push(here()),
            },
            _ => loss.push(here()),
        }
    }
    if let Some(e) = example {
        out.insert("examples".into(), Value::Array(vec![e]));
    }
    // `propertyOrdering` is the order of `properties`, which JSON Schema keeps as written.
    if let (Some(order), Some(Value::Object(props))) = (ordering, out.get_mut("properties")) {
        let mut sorted = Map::new();
        for name in order {
            if let Some(s) = props.shift_remove(&name) {
                sorted.insert(name, s);
            }
        }
        sorted.append(props);
        *props = sorted;
    }
    if nullable {
        let has_any_of = out.contains_key("anyOf");
        match out.get_mut("type") {
            Some(t @ Value::String(_)) => {
                let single = std::mem::take(t);
                *t = json!([single, "null"]);
            }
            Some(_) => {}
            None if has_any_of => {
                if let Some(Value::Array(list)) = out.get_mut("anyOf") {
                    list.push(json!({"type": "null"}));
                }
            }
            None => {
                out.insert("type".into(), json!("null"));
            }
        }
        if let Some(Value::Array(e)) = out.get_mut("enum") {
            e.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// Formats Gemini accepts, by (lower-case) type.
fn gemini_format_ok(ty: Option<&str>, format: &str) -> bool {
    match ty {
        Some("string") => matches!(format, "enum" | "date-time"),
        Some("number") => matches!(format, "float" | "double"),
        Some("integer") => matches!(format, "int32" | "int64"),
        _ => false,
    }
}

/// Where local `$ref`s point: `$defs` / `definitions` of the root schema.
struct Defs(Map<String, Value>);

impl Defs {
    fn lookup(&self, reference: &str) -> Option<&Value> {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"))?;
        self.0.get(name)
    }
}

/// JSON Schema (Anthropic `input_schema`, OpenAI `parameters`) → a Gemini `Schema`, or `None`
/// when nothing is left to send (an object without properties: Gemini wants no `parameters`).
pub fn to_gemini(schema: Value, at: &str, loss: &mut Loss) -> Option<Value> {
    let mut root = match schema {
        Value::Object(o) => o,
        Value::Bool(true) | Value::Null => return None,
        _ => {
            loss.push(at.to_owned());
            return None;
        }
    };
    let mut defs = Map::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(d)) = root.shift_remove(key) {
            defs.extend(d);
        }
    }
    let defs = Defs(defs);
    let out = json_to_gemini(root, at, loss, &defs, 0);
    let empty_object = out.get("type").and_then(Value::as_str) == Some("OBJECT")
        && out
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
    (!empty_object).then_some(Value::Object(out))
}

fn json_to_gemini(
    mut src: Map<String, Value>,
    at: &str,
    loss: &mut Loss,
    defs: &Defs,
    depth: usize,
) -> Map<String, Value> {
    if depth > MAX_DEPTH {
        loss.push(at.to_owned());
        return Map::new();
    }
    // A local `$ref` is inlined (siblings of `$ref` override the referenced schema's keys).
    if let Some(Value::String(reference)) = src.shift_remove("$ref") {
        match defs.lookup(&reference) {
            Some(Value::Object(target)) => {
                let mut merged = target.clone();
                merged.append(&mut src);
                return json_to_gemini(merged, at, loss, defs, depth + 1);
            }
            _ => loss.push(format!("{at}.$ref")),
        }
    }
    // `allOf` with one member is that member.
    if let Some(all) = src.shift_remove("allOf") {
        match all {
            Value::Array(mut list) if list.len() == 1 => {
                if let Some(Value::Object(mut only)) = list.pop() {
                    only.append(&mut src);
                    return json_to_gemini(only, at, loss, defs, depth + 1);
                }
                loss.push(format!("{at}.allOf"));
            }
            _ => loss.push(format!("{at}.allOf")),
        }
    }
    let mut out = Map::new();
    let mut nullable = false;
    let mut types: Vec<String> = Vec::new();
    match src.shift_remove("type") {
        Some(Value::String(t)) => types.push(t),
        Some(Value::Array(list)) => {
            for t in list {
                match t {
                    Value::String(s) if s == "null" => nullable = true,
                    Value::String(s) => types.push(s),
                    _ => loss.push(format!("{at}.type")),
                }
            }
        }
        Some(_) => loss.push(format!("{at}.type")),
        None => {}
    }
    let ty = types.first().map(|t| t.to_ascii_lowercase());
    if types.len() > 1 {
        // Several types: Gemini says it with `anyOf`.
        let branches = types
            .iter()
            .map(|t| json!({"type": t.to_ascii_uppercase()}))
            .collect();
        out.insert("anyOf".into(), Value::Array(branches));
    } else if let Some(t) = &ty {
        out.insert("type".into(), Value::String(t.to_ascii_uppercase()));
    }
    for (k, v) in src {
        let here = || format!("{at}.{k}");
        match k.as_str() {
            "title" | "description" | "pattern" | "minimum" | "maximum" | "default" => {
                out.insert(k, v);
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" => {
                out.insert(k, v);
            }
            "format" => match v.as_str() {
                Some(f) if gemini_format_ok(ty.as_deref(), f) => {
                    out.insert(k, v);
                }
                _ => loss.push(here()),
            },
            "enum" => match v {
                Value::Array(values) => {
                    let mut strings = Vec::with_capacity(values.len());
                    for value in values {
                        match value {
                            Value::String(s) => strings.push(Value::String(s)),
                            Value::Null => nullable = true,
                            _ => {
                                loss.push(here());
                            }
                        }
                    }
                    if !strings.is_empty() {
                        out.insert("enum".into(), Value::Array(strings));
                        out.entry("format").or_insert_with(|| json!("enum"));
                        out.entry("type").or_insert_with(|| json!("STRING"));
                    }
                }
                _ => loss.push(here()),
            },
            "const" => match v {
                Value::String(s) => {
                    out.insert("enum".into(), json!([s]));
                    out.insert("format".into(), json!("enum"));
                    out.entry("type").or_insert_with(|| json!("STRING"));
                }
                _ => loss.push(here()),
            },
            "examples" => match v {
                Value::Array(mut list) if !list.is_empty() => {
                    out.insert("example".into(), list.swap_remove(0));
                }
                _ => {}
            },
            "items" => match v {
                Value::Object(items) => {
                    let items = json_to_gemini(items, &here(), loss, defs, depth + 1);
                    out.insert(k, Value::Object(items));
                }
                _ => loss.push(here()),
            },
            "properties" => match v {
                Value::Object(props) => {
                    let props: Map<String, Value> = props
                        .into_iter()
                        .map(|(name, s)| {
                            let path = format!("{at}.{k}.{name}");
                            let s = match s {
                                Value::Object(o) => o,
                                _ => {
                                    loss.push(path.clone());
                                    Map::new()
                                }
                            };
                            (
                                name,
                                Value::Object(json_to_gemini(s, &path, loss, defs, depth + 1)),
                            )
                        })
                        .collect();
                    out.insert(k, Value::Object(props));
                }
                _ => loss.push(here()),
            },
            "anyOf" | "oneOf" => match v {
                Value::Array(list) => {
                    let mut branches = Vec::with_capacity(list.len());
                    for (i, b) in list.into_iter().enumerate() {
                        let path = format!("{at}.{k}[{i}]");
                        match b {
                            // `{"type": "null"}` among the branches is `nullable`.
                            Value::Object(o)
                                if o.get("type").and_then(Value::as_str) == Some("null")
                                    && o.len() == 1 =>
                            {
                                nullable = true;
                            }
                            Value::Object(o) => branches.push(Value::Object(json_to_gemini(
                                o,
                                &path,
                                loss,
                                defs,
                                depth + 1,
                            ))),
                            _ => loss.push(path),
                        }
                    }
                    if branches.len() == 1 && !out.contains_key("type") {
                        if let Some(Value::Object(only)) = branches.pop() {
                            out.extend(only);
                        }
                    } else if !branches.is_empty() {
                        out.insert("anyOf".into(), Value::Array(branches));
                    }
                }
                _ => loss.push(here()),
            },
            "required" => {
                out.insert(k, v);
            }
            _ if is_metadata(&k) => {}
            _ => loss.push(here()),
        }
    }
    // Gemini rejects `required` names that are not properties.
    if let Some(Value::Array(required)) = out.get("required") {
        let props = out.get("properties").and_then(Value::as_object);
        let kept: Vec<Value> = required
            .iter()
            .filter(|r| {
                r.as_str()
                    .is_some_and(|n| props.is_some_and(|p| p.contains_key(n)))
            })
            .cloned()
            .collect();
        if kept.len() != required.len() {
            loss.push(format!("{at}.required"));
        }
        if kept.is_empty() {
            out.shift_remove("required");
        } else {
            out.insert("required".into(), Value::Array(kept));
        }
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_upper_case_schema_becomes_json_schema() {
        let g = json!({"type": "OBJECT", "properties": {
            "city": {"type": "STRING", "description": "City"},
            "unit": {"type": "STRING", "format": "enum", "enum": ["C", "F"], "nullable": true},
            "days": {"type": "INTEGER", "format": "int32", "minimum": 1},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": "5"}
        }, "required": ["city"], "propertyOrdering": ["unit", "city"]});
        let mut loss = Loss::default();
        let j = to_json_schema(g, "tools[0]", &mut loss);
        assert_eq!(
            j,
            json!({"type": "object", "properties": {
                "unit": {"type": ["string", "null"], "enum": ["C", "F", null]},
                "city": {"type": "string", "description": "City"},
                "days": {"type": "integer", "format": "int32", "minimum": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}
            }, "required": ["city"]})
        );
        // propertyOrdering is honoured by the order of `properties`.
        let keys: Vec<&String> = j["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["unit", "city", "days", "tags"]);
        assert!(loss.is_empty(), "{loss:?}");
    }

    #[test]
    fn unknown_gemini_schema_keys_are_reported() {
        let mut loss = Loss::default();
        let j = to_json_schema(
            json!({"type": "STRING", "x-weird": 1}),
            "tools[0].parameters",
            &mut loss,
        );
        assert_eq!(j, json!({"type": "string"}));
        assert_eq!(loss.0, vec!["tools[0].parameters.x-weird"]);
    }

    #[test]
    fn claude_code_json_schema_becomes_gemini_schema() {
        let s = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "format": "uri"},
                "mode": {"type": ["string", "null"], "enum": ["a", "b"]},
                "kind": {"const": "edit"},
                "limit": {"type": "integer", "exclusiveMinimum": 0},
                "item": {"$ref": "#/$defs/Item"},
                "either": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}
            },
            "required": ["path", "ghost"],
            "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "number"}}}}
        });
        let mut loss = Loss::default();
        let g = to_gemini(s, "tools[0].input_schema", &mut loss).unwrap();
        assert_eq!(
            g,
            json!({"type": "OBJECT", "properties": {
                "path": {"type": "STRING"},
                "mode": {"type": "STRING", "enum": ["a", "b"], "format": "enum", "nullable": true},
                "kind": {"enum": ["edit"], "format": "enum", "type": "STRING"},
                "limit": {"type": "INTEGER"},
                "item": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}},
                "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}], "nullable": true}
            }, "required": ["path"]})
        );
        assert_eq!(
            loss.0,
            vec![
                "tools[0].input_schema.additionalProperties",
                "tools[0].input_schema.properties.path.format",
                "tools[0].input_schema.properties.limit.exclusiveMinimum",
                "tools[0].input_schema.required",
            ]
        );
    }

    #[test]
    fn parameterless_tool_sends_no_schema_and_recursion_is_cut() {
        let mut loss = Loss::default();
        assert_eq!(
            to_gemini(json!({"type": "object", "properties": {}}), "t", &mut loss),
            None
        );
        let recursive = json!({"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}},
            "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}});
        let g = to_gemini(recursive, "t", &mut loss);
        assert!(g.is_some());
        assert!(
            loss.0.iter().any(|p| p.starts_with("t.properties.next")),
            "{loss:?}"
        );
    }

    #[test]
    fn snake_case_keys_are_read() {
        let mut loss = Loss::default();
        let j = to_json_schema(
            json!({"type": "ARRAY", "max_items": 3, "any_of": [{"type": "STRING"}]}),
            "t",
            &mut loss,
        );
        assert_eq!(
            j,
            json!({"type": "array", "maxItems": 3, "anyOf": [{"type": "string"}]})
        );
        assert!(loss.is_empty());
    }
}
