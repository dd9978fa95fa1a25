//! Gemini context caching (spec §8.7) for requests translated from Anthropic's format: a
//! request whose leading part is marked with `cache_control` has that part stored once as a
//! Gemini `cachedContents` entry and referenced by name, as Anthropic prompt caching would
//! reuse it.
//!
//! The cached part is the system prompt, the tools and the leading messages up to the last one
//! carrying `cache_control`; the markers must form one block from the start. (Deliberate
//! difference: the original, via LiteLLM, also cached a marked block in the middle of the
//! conversation and sent it ahead of the earlier messages; Gemini caches are a prefix, so
//! ccproxy leaves such requests unchanged.) The entry is found by its `displayName`, a SHA-256
//! of the cached part and the model, or created; prompts under [`MIN_TOKENS`] are not cached.
//! Any failure (listing, creating, an unexpected shape) leaves the request as it was.

use crate::http_call::{self, CaList, Call};
use crate::translate::{self, Format, RequestInfo};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Smallest estimated prompt (in tokens) worth caching (LiteLLM's threshold).
pub const MIN_TOKENS: u64 = 1024;
/// Deadline for finding or creating the cache entry.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Most list pages read.
const MAX_PAGES: usize = 100;

/// What to cache and how the request changes once the entry exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `displayName` of the entry.
    pub key: String,
    /// The `cachedContents` create body.
    pub entry: Value,
    /// How many leading `contents` of the translated request the entry holds.
    pub cached_contents: usize,
}

fn has_marker(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("cache_control").is_some()))
}

/// A cheap first look at the raw `system` and `messages` JSON of an Anthropic request, reading
/// only where `cache_control` markers are (no JSON tree is built): `false` unless the marked
/// positions form one block from the start with something left after it, so a request that
/// cannot qualify (Claude Code's usual markers) is never parsed whole for this.
pub fn may_qualify(system: Option<&str>, messages: Option<&str>) -> bool {
    use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
    use std::fmt;

    /// Whether a `content` (a string, or a list of blocks) has a block with `cache_control`.
    struct ContentMarked;
    impl<'de> Visitor<'de> for ContentMarked {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("message content")
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            #[derive(serde::Deserialize)]
            struct Block {
                cache_control: Option<IgnoredAny>,
            }
            let mut marked = false;
            while let Some(b) = seq.next_element::<Block>()? {
                marked |= b.cache_control.is_some();
            }
            Ok(marked)
        }
    }
    struct Content(bool);
    impl<'de> serde::Deserialize<'de> for Content {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ContentMarked).map(Content)
        }
    }
    #[derive(serde::Deserialize)]
    struct Message {
        content: Option<Content>,
    }

    let system = match system {
        Some(s) => {
            let mut de = serde_json::Deserializer::from_str(s);
            match de.deserialize_any(ContentMarked) {
                Ok(m) => Some(m),
                Err(_) => return false,
            }
        }
        None => None,
    };
    let Some(messages) = messages.and_then(|m| serde_json::from_str::<Vec<Message>>(m).ok()) else {
        return false;
    };
    let marked: Vec<bool> = system
        .into_iter()
        .chain(
            messages
                .iter()
                .map(|m| m.content.as_ref().is_some_and(|c| c.0)),
        )
        .collect();
    let Some(last) = marked.iter().rposition(|m| *m) else {
        return false;
    };
    marked[..=last].iter().all(|m| *m) && last + 1 < marked.len()
}

/// The plan for `client` (the Anthropic request) whose Gemini translation is `translated`, or
/// `None` when it does not qualify.
pub fn plan(client: &Value, translated: &Value, model: &str) -> Option<Plan> {
    let messages = client.get("messages")?.as_array()?;
    let system = client.get("system");
    let marked: Vec<bool> = system
        .map(has_marker)
        .into_iter()
        .chain(
            messages
                .iter()
                .map(|m| m.get("content").is_some_and(has_marker)),
        )
        .collect();
    let last = marked.iter().rposition(|m| *m)?;
    // One block from the start: every position up to the last marked one is marked.
    if !marked[..=last].iter().all(|m| *m) {
        return None;
    }
    let cached_messages = last + 1 - usize::from(system.is_some());
    if cached_messages >= messages.len() {
        // Gemini needs something left to ask.
        return None;
    }
    let mut sub = Map::new();
    sub.insert("model".into(), Value::String(model.to_owned()));
    sub.insert("max_tokens".into(), json!(1));
    for k in ["system", "tools", "tool_choice"] {
        if let Some(v) = client.get(k) {
            sub.insert(k.into(), v.clone());
        }
    }
    sub.insert(
        "messages".into(),
        Value::Array(messages[..cached_messages].to_vec()),
    );
    let sub = Value::Object(sub);
    if translate::estimate_input_tokens(&sub) < MIN_TOKENS {
        return None;
    }
    let info = RequestInfo {
        model: model.to_owned(),
        path_stream: false,
    };
    let part = translate::request(Format::Anthropic, Format::Gemini, sub.clone(), &info).ok()?;
    let part_contents = part.body.get("contents")?.as_array()?;
    let full = translated.get("contents")?.as_array()?;
    // The cached part must translate to exactly the leading contents of the whole request.
    if part_contents.len() >= full.len() || full[..part_contents.len()] != part_contents[..] {
        return None;
    }
    let mut key_doc = Map::new();
    let mut cached: Vec<Value> = system.cloned().into_iter().collect();
    cached.extend(messages[..cached_messages].iter().cloned());
    key_doc.insert("messages".into(), Value::Array(cached));
    key_doc.insert(
        "tools".into(),
        client.get("tools").cloned().unwrap_or(Value::Null),
    );
    key_doc.insert("model".into(), Value::String(model.to_owned()));
    let digest =
        Sha256::digest(crate::conversation::python_json(&Value::Object(key_doc)).as_bytes());
    let key: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut entry = Map::new();
    entry.insert("model".into(), Value::String(format!("models/{model}")));
    entry.insert("displayName".into(), Value::String(key.clone()));
    entry.insert("contents".into(), Value::Array(part_contents.clone()));
    for k in ["systemInstruction", "tools", "toolConfig"] {
        if let Some(v) = part.body.get(k) {
            entry.insert(k.into(), v.clone());
        }
    }
    Some(Plan {
        key,
        entry: Value::Object(entry),
        cached_contents: part_contents.len(),
    })
}

/// Point `translated` at the entry `name`: the cached contents, system instruction and tools
/// leave the request (Gemini refuses them beside `cachedContent`).
pub fn apply(translated: &mut Value, plan: &Plan, name: &str) {
    let Some(o) = translated.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(c)) = o.get_mut("contents") {
        c.drain(..plan.cached_contents.min(c.len()));
    }
    for k in ["systemInstruction", "tools", "toolConfig"] {
        o.shift_remove(k);
    }
    o.insert("cachedContent".into(), Value::String(name.to_owned()));
}

/// Find the entry named by `plan.key` at `base` (`{scheme}://{host}`), or create it, sending
/// the provider's `auth` headers; returns its resource name (`cachedContents/…`).
pub async fn find_or_create(
    base: &str,
    auth: &[(HeaderName, HeaderValue)],
    plan: &Plan,
    trust: Option<&CaList>,
) -> Result<String, String> {
    match tokio::time::timeout(TIMEOUT, lookup_then_create(base, auth, plan, trust)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}

async fn lookup_then_create(
    base: &str,
    auth: &[(HeaderName, HeaderValue)],
    plan: &Plan,
    trust: Option<&CaList>,
) -> Result<String, String> {
    let url = format!("{base}/v1beta/cachedContents");
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = match &token {
            Some(t) => format!("{url}?pageSize=100&pageToken={t}"),
            None => format!("{url}?pageSize=100"),
        };
        let reply = http_call::send(Call::get(page).headers(auth.to_vec()), TIMEOUT, trust)
            .await
            .map_err(|e| e.to_string())?;
        if reply.status == 403 {
            // Listing not allowed: treat as a miss and create.
            break;
        }
        if reply.status != 200 {
            return Err(format!("listing cachedContents answered {}", reply.status));
        }
        let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        let found = v
            .get("cachedContents")
            .and_then(Value::as_array)
            .and_then(|items| {
                items.iter().find(|c| {
                    c.get("displayName").and_then(Value::as_str) == Some(plan.key.as_str())
                })
            })
            .and_then(|c| c.get("name")?.as_str());
        if let Some(name) = found {
            return Ok(name.to_owned());
        }
        token = v
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b))
            })
            .map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let body = Bytes::from(plan.entry.to_string());
    let call = Call::post(url, "application/json", body).headers(auth.to_vec());
    let reply = http_call::send(call, TIMEOUT, trust)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!(
            "creating the cachedContents entry answered {}",
            reply.status
        ));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    v.get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "the created entry has no name".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_text() -> String {
        "All work and no play makes a long document. ".repeat(200)
    }

    fn request(system_marked: bool, marked: &[bool]) -> Value {
        let mut messages = Vec::new();
        for (i, m) in marked.iter().enumerate() {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let mut block = json!({"type": "text", "text": if i == 0 { long_text() } else { format!("turn {i}") }});
            if *m {
                block["cache_control"] = json!({"type": "ephemeral"});
            }
            messages.push(json!({"role": role, "content": [block]}));
        }
        let mut sys = json!({"type": "text", "text": "You are terse."});
        if system_marked {
            sys["cache_control"] = json!({"type": "ephemeral"});
        }
        json!({"model": "gemini-2.5-flash", "max_tokens": 10, "system": [sys], "messages": messages})
    }

    fn translated(client: &Value) -> Value {
        let info = RequestInfo {
            model: "gemini-2.5-flash".into(),
            path_stream: false,
        };
        translate::request(Format::Anthropic, Format::Gemini, client.clone(), &info)
            .unwrap()
            .body
    }

    #[test]
    fn a_marked_prefix_is_cached_and_the_rest_asked() {
        let client = request(true, &[true, false, false]);
        let t = translated(&client);
        let p = plan(&client, &t, "gemini-2.5-flash").unwrap();
        assert_eq!(p.cached_contents, 1);
        assert_eq!(p.entry["model"], "models/gemini-2.5-flash");
        assert_eq!(p.entry["displayName"], p.key.as_str());
        assert!(p.entry.get("systemInstruction").is_some());
        let mut t2 = t.clone();
        apply(&mut t2, &p, "cachedContents/abc");
        assert_eq!(t2["cachedContent"], "cachedContents/abc");
        assert_eq!(t2["contents"].as_array().unwrap().len(), 2);
        assert!(t2.get("systemInstruction").is_none());
        // Deterministic key.
        assert_eq!(plan(&client, &t, "gemini-2.5-flash").unwrap().key, p.key);
    }

    #[test]
    fn the_first_look_rules_out_requests_without_a_leading_marker() {
        let raw = |v: &Value, k: &str| v.get(k).map(|x| x.to_string());
        for (c, expected) in [
            // Claude Code's usual markers: ruled out without parsing the body.
            (request(true, &[false, false, true]), false),
            (request(false, &[true, false]), false),
            (request(true, &[true, false]), true),
            (request(true, &[false]), true),
            (request(true, &[true]), false),
        ] {
            let (s, m) = (raw(&c, "system"), raw(&c, "messages"));
            assert_eq!(may_qualify(s.as_deref(), m.as_deref()), expected);
        }
        let no_system = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}, {"role": "assistant", "content": "y"}]});
        assert!(may_qualify(None, raw(&no_system, "messages").as_deref()));
        assert!(!may_qualify(None, Some("[]")));
        assert!(!may_qualify(None, None));
    }

    #[test]
    fn requests_that_do_not_qualify_are_left_alone() {
        // Claude Code's usual markers: system and the last message, not one block.
        let c = request(true, &[false, false, true]);
        assert_eq!(plan(&c, &translated(&c), "m"), None);
        // No markers.
        let c = request(false, &[false, false]);
        assert_eq!(plan(&c, &translated(&c), "m"), None);
        // Everything marked: nothing left to ask.
        let c = request(true, &[true]);
        assert_eq!(plan(&c, &translated(&c), "m"), None);
        // Too short to cache.
        let c = json!({"system": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
                       "messages": [{"role": "user", "content": "q"}]});
        assert_eq!(plan(&c, &translated(&c), "m"), None);
    }
}
