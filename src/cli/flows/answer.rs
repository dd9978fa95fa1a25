//! What an LLM answer said, whatever its API and whether it was streamed: the text, the tool
//! calls, and the stop reason, for `ccproxy flows replay`'s side-by-side summary.

use crate::translate::sse::decode_all;
use serde_json::Value;

/// The gist of one answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub tools: Vec<String>,
    pub stop: Option<String>,
}

/// Read an answer from a response body (JSON or SSE).
pub fn read(body: &[u8], streamed: bool) -> Answer {
    let mut a = Answer::default();
    if streamed {
        for ev in decode_all(body) {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                event(&mut a, &v);
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<Value>(body) {
        whole(&mut a, &v);
    }
    a
}

fn push_tool(a: &mut Answer, name: Option<&str>) {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        a.tools.push(n.to_owned());
    }
}

/// A complete (non-streamed) answer.
fn whole(a: &mut Answer, v: &Value) {
    let v = v.get("response").filter(|r| r.is_object()).unwrap_or(v);
    // Anthropic.
    if let Some(content) = v.get("content").and_then(Value::as_array) {
        for block in content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => a.text.push_str(block["text"].as_str().unwrap_or("")),
                Some("tool_use") => push_tool(a, block["name"].as_str()),
                _ => {}
            }
        }
        a.stop = v["stop_reason"].as_str().map(str::to_owned);
        return;
    }
    // OpenAI Chat.
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        let m = &choice["message"];
        a.text.push_str(m["content"].as_str().unwrap_or(""));
        for t in m["tool_calls"].as_array().into_iter().flatten() {
            push_tool(a, t["function"]["name"].as_str());
        }
        a.stop = choice["finish_reason"].as_str().map(str::to_owned);
        return;
    }
    // OpenAI Responses.
    if let Some(output) = v.get("output").and_then(Value::as_array) {
        for item in output {
            match item["type"].as_str() {
                Some("message") => {
                    for c in item["content"].as_array().into_iter().flatten() {
                        a.text.push_str(c["text"].as_str().unwrap_or(""));
                    }
                }
                Some("function_call") => push_tool(a, item["name"].as_str()),
                _ => {}
            }
        }
        a.stop = v["status"].as_str().map(str::to_owned);
        return;
    }
    gemini(a, v);
}

/// Gemini candidates (whole answers and stream chunks look the same).
fn gemini(a: &mut Answer, v: &Value) {
    if let Some(c) = v.get("candidates").and_then(|c| c.get(0)) {
        for p in c["content"]["parts"].as_array().into_iter().flatten() {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            a.text.push_str(p["text"].as_str().unwrap_or(""));
            push_tool(a, p["functionCall"]["name"].as_str());
        }
        if let Some(r) = c["finishReason"].as_str() {
            a.stop = Some(r.to_owned());
        }
    }
}

/// One stream event.
fn event(a: &mut Answer, v: &Value) {
    let v = v
        .get("response")
        .filter(|r| r.get("candidates").is_some())
        .unwrap_or(v);
    match v.get("type").and_then(Value::as_str) {
        // Anthropic.
        Some("content_block_start") => {
            if v["content_block"]["type"] == "tool_use" {
                push_tool(a, v["content_block"]["name"].as_str());
            }
        }
        Some("content_block_delta") => {
            a.text.push_str(v["delta"]["text"].as_str().unwrap_or(""));
        }
        Some("message_delta") => {
            a.stop = v["delta"]["stop_reason"].as_str().map(str::to_owned);
        }
        // OpenAI Responses.
        Some("response.output_text.delta") => a.text.push_str(v["delta"].as_str().unwrap_or("")),
        Some("response.output_item.added") => {
            if v["item"]["type"] == "function_call" {
                push_tool(a, v["item"]["name"].as_str());
            }
        }
        Some("response.completed") => {
            a.stop = v["response"]["status"].as_str().map(str::to_owned);
        }
        Some(_) => {}
        None => {
            if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
                // OpenAI Chat chunk.
                let d = &choice["delta"];
                a.text.push_str(d["content"].as_str().unwrap_or(""));
                for t in d["tool_calls"].as_array().into_iter().flatten() {
                    push_tool(a, t["function"]["name"].as_str());
                }
                if let Some(r) = choice["finish_reason"].as_str() {
                    a.stop = Some(r.to_owned());
                }
            } else {
                gemini(a, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers_of_each_api() {
        let anthropic = br#"{"content":[{"type":"text","text":"4"},{"type":"tool_use","name":"calc","input":{}}],"stop_reason":"tool_use"}"#;
        assert_eq!(
            read(anthropic, false),
            Answer {
                text: "4".into(),
                tools: vec!["calc".into()],
                stop: Some("tool_use".into())
            }
        );
        let openai = br#"{"choices":[{"message":{"content":"hi","tool_calls":[{"function":{"name":"f"}}]},"finish_reason":"stop"}]}"#;
        assert_eq!(
            read(openai, false),
            Answer {
                text: "hi".into(),
                tools: vec!["f".into()],
                stop: Some("stop".into())
            }
        );
        let gemini = br#"{"candidates":[{"content":{"parts":[{"text":"a"},{"functionCall":{"name":"g"}}]},"finishReason":"STOP"}]}"#;
        assert_eq!(
            read(gemini, false),
            Answer {
                text: "a".into(),
                tools: vec!["g".into()],
                stop: Some("STOP".into())
            }
        );
    }

    #[test]
    fn streams_are_assembled() {
        let anthropic = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"he\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"llo\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n";
        let a = read(anthropic, true);
        assert_eq!(
            (a.text.as_str(), a.stop.as_deref()),
            ("hello", Some("end_turn"))
        );
        let openai = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"y\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let a = read(openai, true);
        assert_eq!((a.text.as_str(), a.stop.as_deref()), ("xy", Some("stop")));
    }
}
