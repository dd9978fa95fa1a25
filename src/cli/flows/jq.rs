//! jq filters for `ccproxy flows`, run in-process with jaq.
//!
//! This module owns turning the `--jq` arguments of `ccproxy flows` into one jq program, running it
//! on the JSON array of flows, and turning jaq's parse, compile and runtime errors into readable
//! [`JqError`]s. No `jq` binary is needed: the program is parsed, compiled and run by jaq (jaq-core
//! with jaq-std and jaq-json's standard library), so behaviour follows jaq where it differs from jq.
//!
//! `halt` and `halt_error` are replaced by filters that raise an error (jaq's versions would exit
//! the whole process), `input`/`inputs` see no further inputs, `$ENV` is not defined (use `env`),
//! and `import`/`include` cannot load modules. Filters are joined on one line, so a `#` comment in
//! one filter also comments out the filters after it.

use jaq_core::box_iter::box_once;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{compile, Compiler, Ctx, Error, Exn, Native, RcIter};
use jaq_json::Val;
use serde_json::{Number, Value};

/// Longest excerpt of the program quoted in a syntax error.
const MAX_EXCERPT_CHARS: usize = 40;

/// Why a jq filter gave no JSON array of flows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JqError {
    /// The program did not parse or compile, or raised an error while running. The message names
    /// the program and what was wrong.
    #[error("jq filter failed: {0}")]
    Failed(String),
    /// The program's one output was not an array; this is jq's name for its type.
    #[error("jq filter must produce a JSON array, got {0}")]
    NotArray(&'static str),
    /// The program produced no output (e.g. `empty`, or `.[]` on an empty array).
    #[error("jq filter produced no output")]
    NoOutput,
    /// The program produced this many outputs (more than one), e.g. `.[]`.
    #[error("jq filter must produce a single JSON array, got {0} outputs")]
    ManyOutputs(usize),
}

/// Run `filters`, joined with ` | ` into one program, on `input` (the JSON array of flows).
///
/// Blank filters are skipped, and no filters at all is the identity: `input` comes back unchanged.
/// The program must produce exactly one output, and it must be a JSON array.
///
/// # Errors
///
/// [`JqError::Failed`] when the program does not parse or compile or raises an error while
/// running; [`JqError::NoOutput`], [`JqError::ManyOutputs`] or [`JqError::NotArray`] when its
/// output is not exactly one JSON array.
pub fn apply(filters: &[String], input: Value) -> Result<Value, JqError> {
    let parts: Vec<&str> = filters
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(input);
    }
    let program = parts.join(" | ");

    let arena = Arena::default();
    let loader = Loader::new(jaq_std::defs().chain(jaq_json::defs()));
    let file = File {
        code: program.as_str(),
        path: (),
    };
    let modules = loader
        .load(&arena, file)
        .map_err(|errs| load_error(&program, errs))?;
    let filter = Compiler::default()
        .with_funs(jaq_std::funs().chain(jaq_json::funs()).map(no_halt))
        .compile(modules)
        .map_err(|errs| compile_error(&program, errs))?;

    let inputs = RcIter::new(core::iter::empty());
    let mut outputs = Vec::with_capacity(1);
    for output in filter.run((Ctx::new([], &inputs), Val::from(input))) {
        match output {
            Ok(v) => outputs.push(v),
            Err(e) => return Err(runtime_error(&program, e)),
        }
    }

    let mut outputs = outputs.into_iter();
    match (outputs.next(), outputs.len()) {
        (None, _) => Err(JqError::NoOutput),
        (Some(Val::Arr(a)), 0) => Ok(Value::Array(a.iter().map(to_json).collect())),
        (Some(v), 0) => Err(JqError::NotArray(type_name(&v))),
        (Some(_), rest) => Err(JqError::ManyOutputs(rest + 1)),
    }
}

/// jaq's `halt` and `halt_error` call `std::process::exit`; in-process they raise an error instead.
fn no_halt<F>(
    (name, args, native): (&'static str, F, Native<Val>),
) -> (&'static str, F, Native<Val>) {
    let native = match name {
        "halt" | "halt_error" => Native::new(|_, _| {
            box_once(Err(Exn::from(Error::str(
                "halt and halt_error are not supported here",
            ))))
        }),
        _ => native,
    };
    (name, args, native)
}

/// jq's name for the type of a value.
fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "boolean",
        Val::Int(_) | Val::Float(_) | Val::Num(_) => "number",
        Val::Str(_) => "string",
        Val::Arr(_) => "array",
        Val::Obj(_) => "object",
    }
}

/// Convert a jaq value to JSON. Integers stay integers; a float with an integral value (such as
/// the result of `400 / 2`) becomes an integer like jq prints it; NaN becomes `null` and ±infinity
/// the largest finite double, as in jq. Unlike `serde_json::Value::from(Val)`, this never panics
/// on a number literal `serde_json` cannot represent (such as `1e1000`).
fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Int(i) => Value::Number(Number::from(*i)),
        Val::Float(f) => float_to_json(*f),
        Val::Num(n) => match n.parse::<Number>() {
            Ok(n) => Value::Number(n),
            Err(_) => n.parse::<f64>().map_or(Value::Null, float_to_json),
        },
        Val::Str(s) => Value::String(s.to_string()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
    }
}

fn float_to_json(f: f64) -> Value {
    /// Integral doubles below 2^53 convert to `i64` exactly.
    const EXACT_INT: f64 = 9_007_199_254_740_992.0;
    if f.is_nan() {
        return Value::Null;
    }
    let f = f.clamp(f64::MIN, f64::MAX);
    if f.fract() == 0.0 && f.abs() < EXACT_INT {
        return Value::Number(Number::from(f as i64));
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn runtime_error(program: &str, e: Error<Val>) -> JqError {
    // A string error (`error("...")`, or jaq's own messages) reads best without JSON quotes.
    let msg = match e.into_val() {
        Val::Str(s) => s.to_string(),
        v => v.to_string(),
    };
    JqError::Failed(format!("`{program}`: {msg}"))
}

fn load_error(program: &str, errs: load::Errors<&str, ()>) -> JqError {
    use load::{lex, parse};
    let mut syntax = Vec::new();
    let mut io = Vec::new();
    for (_file, err) in errs {
        match err {
            load::Error::Io(errs) => io.extend(
                errs.into_iter()
                    .map(|(path, e)| format!("cannot load module {path:?}: {e}")),
            ),
            load::Error::Lex(errs) => syntax.extend(errs.into_iter().map(|(expect, found)| {
                // The lexer reports everything from the offending character to the end.
                let found = found
                    .chars()
                    .next()
                    .map_or(found, |c| &found[..c.len_utf8()]);
                let expected = match expect {
                    // Where the lexer gave up is reported by another error, if anywhere.
                    lex::Expect::Delim(open) => {
                        return format!("unclosed `{open}`{}", at_column(program, open))
                    }
                    lex::Expect::Token => {
                        return format!("unexpected {}", found_text(program, found))
                    }
                    lex::Expect::Digit => "digit",
                    lex::Expect::Ident => "identifier",
                    lex::Expect::Escape => "string escape sequence",
                    lex::Expect::Unicode => "4-digit hexadecimal code point",
                    _ => "something else",
                };
                format!("expected {expected}, found {}", found_text(program, found))
            })),
            load::Error::Parse(errs) => syntax.extend(errs.into_iter().map(|(expect, found)| {
                let expected = match expect {
                    parse::Expect::Just(token) => format!("`{token}`"),
                    other => other.as_str().to_string(),
                };
                format!("expected {expected}, found {}", found_text(program, found))
            })),
        }
    }
    syntax.dedup();
    let mut msg = if syntax.is_empty() {
        format!("`{program}`: ")
    } else {
        format!("syntax error in `{program}`: ")
    };
    msg.push_str(&syntax.into_iter().chain(io).collect::<Vec<_>>().join("; "));
    JqError::Failed(msg)
}

/// "`x` at column N" for a slice `found` of `program`, or "end of input" for an empty slice.
fn found_text(program: &str, found: &str) -> String {
    if found.is_empty() {
        "end of input".to_string()
    } else {
        format!("`{}`{}", excerpt(found), at_column(program, found))
    }
}

/// " at column N" (1-based, in characters) where the slice `part` of `program` starts, or nothing
/// if `part` does not point into `program`.
fn at_column(program: &str, part: &str) -> String {
    (part.as_ptr() as usize)
        .checked_sub(program.as_ptr() as usize)
        .filter(|&o| o <= program.len() && program.is_char_boundary(o))
        .map_or_else(String::new, |o| {
            format!(" at column {}", program[..o].chars().count() + 1)
        })
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn compile_error(program: &str, errs: compile::Errors<&str, ()>) -> JqError {
    let msgs: Vec<String> = errs
        .into_iter()
        .flat_map(|(_file, errs)| errs)
        .map(|(name, undefined)| match undefined {
            compile::Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
            other => format!("undefined {} `{name}`", other.as_str()),
        })
        .collect();
    JqError::Failed(format!("`{program}`: {}", msgs.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flows() -> Value {
        json!([
            {"id": "a1", "status": 200, "model": "claude-sonnet-4", "duration_ms": 1500},
            {"id": "b2", "status": 429, "model": "gpt-4o", "duration_ms": 30},
            {"id": "c3", "status": 200, "model": "claude-haiku-3", "duration_ms": 800}
        ])
    }

    fn run(filters: &[&str]) -> Result<Value, JqError> {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        apply(&filters, flows())
    }

    fn err(filters: &[&str]) -> String {
        run(filters).unwrap_err().to_string()
    }

    #[test]
    fn no_filters_is_identity() {
        assert_eq!(apply(&[], flows()).unwrap(), flows());
        assert_eq!(run(&["", "  "]).unwrap(), flows());
        assert_eq!(run(&["."]).unwrap(), flows());
    }

    #[test]
    fn select_keeps_integers() {
        let out = run(&["map(select(.status == 200))"]).unwrap();
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"[{"id":"a1","status":200,"model":"claude-sonnet-4","duration_ms":1500},{"id":"c3","status":200,"model":"claude-haiku-3","duration_ms":800}]"#
        );
    }

    #[test]
    fn filters_are_joined_with_pipes() {
        let out = run(&["map(select(.status == 200))", "map(.id)"]).unwrap();
        assert_eq!(out, json!(["a1", "c3"]));
    }

    #[test]
    fn slice() {
        assert_eq!(run(&[".[0:1] | map(.id)"]).unwrap(), json!(["a1"]));
        assert_eq!(run(&[".[0:1]"]).unwrap(), json!([flows()[0]]));
    }

    #[test]
    fn std_functions() {
        assert_eq!(
            run(&[r#"map(select(.model | test("^claude-")) | .id)"#]).unwrap(),
            json!(["a1", "c3"])
        );
        assert_eq!(
            run(&["sort_by(.duration_ms) | map(.id)"]).unwrap(),
            json!(["b2", "c3", "a1"])
        );
        assert_eq!(run(&["[first | .id]"]).unwrap(), json!(["a1"]));
        assert_eq!(
            run(&["[limit(2; .[]) | .id]"]).unwrap(),
            json!(["a1", "b2"])
        );
        assert_eq!(
            run(&["map(.duration_ms / 100)"]).unwrap(),
            json!([15, 0.3, 8])
        );
        assert_eq!(
            run(&["[length, (map(.status) | add)]"]).unwrap(),
            json!([3, 829])
        );
        assert_eq!(
            run(&["group_by(.status) | map({status: .[0].status, n: length})"]).unwrap(),
            json!([{"status": 200, "n": 2}, {"status": 429, "n": 1}])
        );
    }

    #[test]
    fn numbers_round_trip() {
        let input = json!([0, -7, 1.5, 1e300, 18446744073709551615u64, 2.0]);
        let out = apply(&[".".to_string()], input.clone()).unwrap();
        assert_eq!(out, input);
        assert_eq!(
            serde_json::to_string(&apply(&["map(.)".to_string()], input).unwrap()).unwrap(),
            "[0,-7,1.5,1e+300,18446744073709551615,2.0]"
        );
        assert_eq!(
            apply(
                &["[1e1000, -1e1000, nan, 0.1 + 0.2]".to_string()],
                json!([])
            )
            .unwrap(),
            json!([f64::MAX, f64::MIN, null, 0.30000000000000004])
        );
    }

    #[test]
    fn parse_error() {
        assert_eq!(
            err(&["map(select(.status == 200)"]),
            "jq filter failed: syntax error in `map(select(.status == 200)`: \
             unclosed `(` at column 4"
        );
        assert_eq!(
            err(&[".[] | ]"]),
            "jq filter failed: syntax error in `.[] | ]`: unexpected `]` at column 7"
        );
        assert_eq!(
            err(&["map(.id)", ".[0] |"]),
            "jq filter failed: syntax error in `map(.id) | .[0] |`: expected term, found end of input"
        );
        assert_eq!(
            err(&["if . then 1"]),
            "jq filter failed: syntax error in `if . then 1`: expected else or end, found end of input"
        );
        assert_eq!(
            err(&["map(.id) | [.[", ".[0]"]),
            "jq filter failed: syntax error in `map(.id) | [.[ | .[0]`: \
             unclosed `[` at column 14; unclosed `[` at column 12"
        );
        assert_eq!(
            err(&["[.[", "§"]),
            "jq filter failed: syntax error in `[.[ | §`: unclosed `[` at column 3; \
             unclosed `[` at column 1; unexpected `§` at column 7"
        );
        assert_eq!(
            err(&[r#"map("\q")"#]),
            r#"jq filter failed: syntax error in `map("\q")`: expected string escape sequence, found `q` at column 7"#
        );
        assert_eq!(
            err(&[". | (1 2)"]),
            "jq filter failed: syntax error in `. | (1 2)`: expected `)`, found `2` at column 8"
        );
        assert_eq!(
            err(&[r#"include "x"; ."#]),
            r#"jq filter failed: `include "x"; .`: cannot load module "x": module loading not supported"#
        );
    }

    #[test]
    fn compile_error() {
        assert_eq!(
            err(&["map(nosuchfn(1))"]),
            "jq filter failed: `map(nosuchfn(1))`: undefined filter `nosuchfn/1`"
        );
        assert_eq!(
            err(&["$x"]),
            "jq filter failed: `$x`: undefined variable `$x`"
        );
    }

    #[test]
    fn runtime_error() {
        assert_eq!(
            apply(&[".[] | .x + 1".to_string()], json!(["a"]))
                .unwrap_err()
                .to_string(),
            r#"jq filter failed: `.[] | .x + 1`: cannot use "a" as iterable (array or object)"#
        );
        assert_eq!(
            err(&["map(.id + 1)"]),
            r#"jq filter failed: `map(.id + 1)`: cannot calculate "a1" + 1"#
        );
        assert_eq!(
            err(&[r#"error("boom")"#]),
            r#"jq filter failed: `error("boom")`: boom"#
        );
        assert_eq!(
            err(&["halt"]),
            "jq filter failed: `halt`: halt and halt_error are not supported here"
        );
        assert_eq!(
            err(&[r#""bye" | halt_error(1)"#]),
            r#"jq filter failed: `"bye" | halt_error(1)`: halt and halt_error are not supported here"#
        );
    }

    #[test]
    fn output_must_be_one_array() {
        assert_eq!(
            err(&["length"]),
            "jq filter must produce a JSON array, got number"
        );
        assert_eq!(run(&[".[0]"]), Err(JqError::NotArray("object")));
        assert_eq!(run(&[".[0].id"]), Err(JqError::NotArray("string")));
        assert_eq!(run(&["null"]), Err(JqError::NotArray("null")));
        assert_eq!(run(&["true"]), Err(JqError::NotArray("boolean")));
        assert_eq!(
            run(&["map(.id) | join(\",\")"]),
            Err(JqError::NotArray("string"))
        );
        assert_eq!(
            err(&[".[]"]),
            "jq filter must produce a single JSON array, got 3 outputs"
        );
        assert_eq!(run(&[".[], ."]), Err(JqError::ManyOutputs(4)));
        assert_eq!(err(&["empty"]), "jq filter produced no output");
        assert_eq!(
            apply(&[".[]".to_string()], json!([])),
            Err(JqError::NoOutput)
        );
    }
}
