//! JSON values to bytes: the same output as `serde_json::to_vec`, with strings escaped a word
//! at a time.
//!
//! Translated requests are mostly long strings (prompts, tool results, base64 images), and
//! `serde_json` checks every byte of them against its escape table one by one; on a 300 KB
//! Claude-Code-like request that was three quarters of its serialisation time. Here eight bytes
//! are checked at once for the only bytes JSON must escape (`"`, `\` and controls below 0x20),
//! and clean runs are copied whole. The output is byte-identical to `serde_json` (compact, same
//! escapes, numbers written by `serde_json` itself), which a property test and the fuzz targets
//! check.

use serde_json::Value;

/// `v` as compact JSON bytes.
pub fn to_vec(v: &Value) -> Vec<u8> {
    to_vec_with_capacity(v, 128)
}

/// `v` as compact JSON bytes, written into a buffer of `capacity` bytes to start with (the
/// expected size, when the caller knows it, saves the reallocations of a growing buffer).
pub fn to_vec_with_capacity(v: &Value, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    write_value(&mut out, v);
    out
}

/// `v` as compact JSON text.
pub fn to_string(v: &Value) -> String {
    // Only whole UTF-8 sequences and ASCII escapes are written, so the bytes are UTF-8; the
    // lossy fallback cannot trigger but keeps this function total.
    match String::from_utf8(to_vec(v)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number formatting (itoa / ryu), so numbers match exactly. Writing
        // into a Vec cannot fail.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that is `"`, `\` or below 0x20. Bytes above the first such
/// byte may be flagged falsely (borrows carry upwards), never bytes below it, so the lowest set
/// bit is exact.
#[inline]
fn escape_mask(w: u64) -> u64 {
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    below_space
        | zero_bytes(w ^ (ONES * u64::from(b'"')))
        | zero_bytes(w ^ (ONES * u64::from(b'\\')))
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time; the last few padded with a byte that never needs escaping.
        let (w, n) = match bytes
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            Some(w) => (w, 8),
            None => {
                let mut w = [b'a'; 8];
                let n = bytes.len() - i;
                w[..n].copy_from_slice(&bytes[i..]);
                (w, n)
            }
        };
        let mask = escape_mask(u64::from_le_bytes(w));
        if mask == 0 {
            i += n;
            continue;
        }
        let at = i + (mask.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..at]);
        write_escape(out, bytes[at]);
        start = at + 1;
        i = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The escape serde_json writes for `b` (one of `"`, `\`, or a control byte).
fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_like_serde_json() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            // The byte alone, and at every offset inside and around an 8-byte word.
            for pad in 0..17 {
                let s = format!("{}{c}{}", "a".repeat(pad), "é".repeat(pad % 5));
                let v = Value::String(s);
                assert_eq!(
                    to_vec(&v),
                    serde_json::to_vec(&v).unwrap_or_default(),
                    "byte {b:#x} pad {pad}"
                );
            }
        }
    }

    #[test]
    fn numbers_and_nesting_match_serde_json() {
        let v = json!({"a": [1, -2, 3.5, 1e300, 0.1, u64::MAX, i64::MIN, null, true, false],
                       "nested": {"k\"ey\n": {"x": [], "y": {}}}, "": "\u{2028}\u{0}"});
        assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap_or_default());
        assert_eq!(to_string(&v), v.to_string());
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn output_is_byte_identical_to_serde_json(v in arb_value()) {
            prop_assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap_or_default());
        }
    }
}
