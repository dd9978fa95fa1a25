//! Golden fixtures for every translation pair (`tests/fixtures/<client>_to_<provider>/<case>/`).
//!
//! Inputs: `request.json` (client body), optional `info.json` (`model`, `path_stream`),
//! `upstream_response.json` and `upstream_stream.sse` (what the provider sends). Snapshots:
//! `upstream_request.json`, `response.json`, `stream.json` (client stream as a list of
//! `{event, data}`) and `loss.json`. A missing snapshot fails the test; `UPDATE_FIXTURES=1`
//! (re)writes them, to be reviewed like code. Volatile fields (`created`, `created_at`) are zeroed.

use ccproxy::translate::sse::Decoder;
use ccproxy::translate::stream::StreamTranslator;
use ccproxy::translate::{self, Format, Loss, RequestInfo};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn normalize(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "created" || k == "created_at" {
                    *x = json!(0);
                } else {
                    normalize(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check(case: &Path, name: &str, mut got: Value, failures: &mut Vec<String>) {
    normalize(&mut got);
    let path = case.join(name);
    let update = std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1");
    if update {
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    if !path.exists() {
        failures.push(format!(
            "{}: missing snapshot (run with UPDATE_FIXTURES=1 and review)",
            path.display()
        ));
        return;
    }
    let want = read_json(&path);
    if want != got {
        failures.push(format!(
            "{}: differs\n--- want\n{}\n--- got\n{}",
            path.display(),
            serde_json::to_string_pretty(&want).unwrap(),
            serde_json::to_string_pretty(&got).unwrap()
        ));
    }
}

fn format_of(s: &str) -> (Format, Format) {
    match s {
        "openai" => (Format::OpenAi, Format::OpenAi),
        "anthropic" => (Format::Anthropic, Format::Anthropic),
        "gemini" => (Format::Gemini, Format::Gemini),
        "responses" => (Format::Responses, Format::OpenAi),
        other => panic!("unknown format {other}"),
    }
}

fn stream_events(bytes: &[u8]) -> Value {
    let mut d = Decoder::new();
    let mut events = d.push(bytes).unwrap();
    events.extend(d.finish());
    Value::Array(
        events
            .into_iter()
            .map(|e| {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
                json!({"event": e.event, "data": data})
            })
            .collect(),
    )
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for pair in std::fs::read_dir(&root).unwrap() {
        let pair = pair.unwrap().path();
        if !pair.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(&pair).unwrap() {
            let case = case.unwrap().path();
            if case.join("request.json").exists() {
                out.push(case);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_translation_pair_matches_its_golden_fixtures() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 6, "fixtures missing: {all:?}");
    for case in &all {
        let pair = case
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (from, to) = pair.split_once("_to_").unwrap();
        let (client, _) = format_of(from);
        let (_, provider) = format_of(to);
        let request = read_json(&case.join("request.json"));
        let info_path = case.join("info.json");
        let info = if info_path.exists() {
            let v = read_json(&info_path);
            RequestInfo {
                model: v["model"].as_str().unwrap_or_default().to_owned(),
                path_stream: v["path_stream"].as_bool().unwrap_or(false),
            }
        } else {
            RequestInfo {
                model: request["model"].as_str().unwrap_or_default().to_owned(),
                path_stream: false,
            }
        };
        let t = translate::request(client, provider, request.clone(), &info)
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        check(case, "upstream_request.json", t.body, &mut failures);
        let mut loss = t.loss.clone();
        if case.join("upstream_response.json").exists() {
            let up = read_json(&case.join("upstream_response.json"));
            let out = translate::response(provider, client, up, &info.model, &mut loss)
                .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
            check(case, "response.json", out, &mut failures);
        }
        if case.join("upstream_stream.sse").exists() {
            let bytes = std::fs::read(case.join("upstream_stream.sse")).unwrap();
            let whole = {
                let mut s = StreamTranslator::new(provider, client, &info.model).unwrap();
                let mut out = s.push(&bytes);
                out.extend(s.finish());
                out
            };
            // The same stream fed byte by byte gives the same client stream.
            let mut s = StreamTranslator::new(provider, client, &info.model).unwrap();
            let mut split = Vec::new();
            for b in bytes.chunks(1) {
                split.extend(s.push(b));
            }
            split.extend(s.finish());
            let (mut a, mut b) = (stream_events(&whole), stream_events(&split));
            normalize(&mut a);
            normalize(&mut b);
            assert_eq!(
                a,
                b,
                "{}: stream output depends on chunking",
                case.display()
            );
            check(case, "stream.json", a, &mut failures);
        }
        check(case, "loss.json", json!(loss_list(&loss)), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn loss_list(l: &Loss) -> Vec<String> {
    l.0.clone()
}
