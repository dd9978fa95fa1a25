//! Request translation: any JSON, every client format to every provider format; never panics.
#![no_main]

use ccproxy::translate::{self, Format, RequestInfo};
use libfuzzer_sys::fuzz_target;

const CLIENTS: [Format; 4] = [Format::Anthropic, Format::OpenAi, Format::Gemini, Format::Responses];
const PROVIDERS: [Format; 3] = [Format::Anthropic, Format::OpenAi, Format::Gemini];

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let info = RequestInfo {
        model: "m".into(),
        path_stream: data.len() % 2 == 0,
    };
    for from in CLIENTS {
        for to in PROVIDERS {
            if let Ok(t) = translate::request(from, to, v.clone(), &info) {
                // Whatever comes out serializes.
                let _ = serde_json::to_vec(&t.body);
            }
        }
    }
});
