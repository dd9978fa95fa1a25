//! Request translation: any JSON, every client format to every provider format; never panics.
//! Also differential: the gateway's JSON writer is byte-identical to `serde_json`.
#![no_main]

use ccproxy::translate::{self, Format, RequestInfo};
use libfuzzer_sys::fuzz_target;

const CLIENTS: [Format; 4] = [Format::Anthropic, Format::OpenAi, Format::Gemini, Format::Responses];
const PROVIDERS: [Format; 3] = [Format::Anthropic, Format::OpenAi, Format::Gemini];

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    same_bytes_as_serde_json(&v);
    let info = RequestInfo {
        model: "m".into(),
        path_stream: data.len() % 2 == 0,
    };
    for from in CLIENTS {
        for to in PROVIDERS {
            if let Ok(t) = translate::request(from, to, v.clone(), &info) {
                same_bytes_as_serde_json(&t.body);
            }
        }
    }
});

fn same_bytes_as_serde_json(v: &serde_json::Value) {
    let ours = translate::serialize::to_vec(v);
    let theirs = serde_json::to_vec(v).unwrap_or_default();
    assert_eq!(ours, theirs, "ccproxy's writer differs from serde_json");
}
