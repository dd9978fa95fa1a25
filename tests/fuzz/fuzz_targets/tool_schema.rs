//! Tool schemas between Gemini's OpenAPI subset and JSON Schema, both ways, on any JSON
//! (recursive `$ref`s, deep nesting); never panics, and what comes out serializes.
#![no_main]

use ccproxy::translate::schema;
use ccproxy::translate::Loss;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut loss = Loss::default();
    let j = schema::to_json_schema(v.clone(), "s", &mut loss);
    let _ = serde_json::to_vec(&j);
    if let Some(g) = schema::to_gemini(v, "s", &mut loss) {
        let _ = serde_json::to_vec(&g);
        // Back again.
        let _ = schema::to_json_schema(g, "s", &mut loss);
    }
});
