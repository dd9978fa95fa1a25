//! The SSE decoder: any bytes, split anywhere, decode to the same events as in one piece, never
//! panic, and an event limit is honoured.
#![no_main]

use ccproxy::translate::sse::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cuts, bytes) = data.split_at(data.len().min(4));
    let mut whole = Decoder::new();
    let mut expected = whole.push(bytes).unwrap_or_default();
    expected.extend(whole.finish());
    // Split at points taken from the first bytes.
    let mut d = Decoder::new();
    let mut got = Vec::new();
    let mut rest = bytes;
    for c in cuts {
        let at = (*c as usize).min(rest.len());
        let (a, b) = rest.split_at(at);
        got.extend(d.push(a).unwrap_or_default());
        rest = b;
    }
    got.extend(d.push(rest).unwrap_or_default());
    got.extend(d.finish());
    assert_eq!(got, expected);
    // A limit: either the events come out, or an error; never a panic.
    let mut limited = Decoder::with_limit(64);
    for chunk in bytes.chunks(17) {
        if limited.push(chunk).is_err() {
            break;
        }
    }
    let _ = limited.finish();
});
