//! Stream translation: any bytes as a provider SSE stream, in chunks, every pair; never panics
//! and the client stream is closed exactly once.
#![no_main]

use ccproxy::translate::stream::StreamTranslator;
use ccproxy::translate::Format;
use libfuzzer_sys::fuzz_target;

const CLIENTS: [Format; 4] = [Format::Anthropic, Format::OpenAi, Format::Gemini, Format::Responses];
const PROVIDERS: [Format; 3] = [Format::Anthropic, Format::OpenAi, Format::Gemini];

fuzz_target!(|data: &[u8]| {
    let chunk = 1 + data.first().map_or(0, |b| *b as usize % 64);
    for from in PROVIDERS {
        for to in CLIENTS {
            let Some(t) = StreamTranslator::new(from, to, "m") else {
                continue;
            };
            let mut t = t.with_event_limit(4096);
            let mut out = Vec::new();
            for c in data.chunks(chunk) {
                out.extend(t.push(c));
            }
            out.extend(t.finish());
            // Finishing again adds nothing.
            assert!(t.finish().is_empty());
            if to == Format::OpenAi && !out.is_empty() {
                let done = String::from_utf8_lossy(&out).matches("data: [DONE]").count();
                assert!(done <= 1, "the OpenAI stream was closed {done} times");
            }
        }
    }
});
