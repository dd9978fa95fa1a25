//! Response translation: any JSON as a provider body (success and error), every provider
//! format to every client format; never panics.
#![no_main]

use ccproxy::translate::{self, Format, Loss};
use libfuzzer_sys::fuzz_target;

const CLIENTS: [Format; 4] = [Format::Anthropic, Format::OpenAi, Format::Gemini, Format::Responses];
const PROVIDERS: [Format; 3] = [Format::Anthropic, Format::OpenAi, Format::Gemini];

fuzz_target!(|data: &[u8]| {
    let v = serde_json::from_slice::<serde_json::Value>(data).unwrap_or(serde_json::Value::Null);
    let raw = String::from_utf8_lossy(data);
    for from in PROVIDERS {
        for to in CLIENTS {
            if let Ok(out) = translate::response(from, to, v.clone(), "m", &mut Loss::default()) {
                let ours = translate::serialize::to_vec(&out);
                assert_eq!(ours, serde_json::to_vec(&out).unwrap_or_default());
            }
            let _ = translate::error_body(to, 500, &v, &raw);
            if let Ok(hub) = translate::response_hub(from, v.clone(), "m", &mut Loss::default()) {
                let _ = translate::stream::stream_from_message(to, &hub, "m");
            }
        }
    }
});
