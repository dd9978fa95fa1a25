//! The official Python SDKs (anthropic, openai, google-genai) driven through the gateway against
//! in-repo mock providers: what real clients send (google-genai's default `v1` paths, its
//! upper-case OpenAPI tool schemas and `parameters_json_schema`) and what they must be able to
//! parse back, buffered and streamed.
//!
//! The SDKs are installed on first use into `~/.cache/ccproxy-sdk/venv` (`CCPROXY_SDK_VENV`
//! overrides the place); without Python or PyPI access each test prints why it is skipped.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::{provider, providers, Gateway};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The SDK versions the tests were written against.
const PACKAGES: &[&str] = &["anthropic==2.16.0", "openai==3.57.0", "google-genai==3.6.1"];

fn venv_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CCPROXY_SDK_VENV") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/ccproxy-sdk/venv")
}

/// The venv's python, installing the SDKs first if needed; `Err(reason)` when impossible.
fn python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = venv_dir();
            let py = venv.join("bin/python");
            let marker = venv.join(".ccproxy-packages");
            if std::fs::read_to_string(&marker).is_ok_and(|m| m == PACKAGES.join(" ")) {
                return Ok(py);
            }
            // Build next to the final place and rename, so concurrent test processes never
            // see a half-installed venv.
            let parent = venv.parent().ok_or("no cache directory")?;
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            let staging = parent.join(format!("venv.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&staging)
                .status()
                .map_err(|e| format!("python3 not available: {e}"))?;
            if !made.success() {
                return Err("python3 -m venv failed".into());
            }
            let pip = Command::new(staging.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .args(PACKAGES)
                .status()
                .map_err(|e| e.to_string())?;
            if !pip.success() {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(format!(
                    "pip install {} failed (no PyPI access?)",
                    PACKAGES.join(" ")
                ));
            }
            std::fs::write(staging.join(".ccproxy-packages"), PACKAGES.join(" "))
                .map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&venv);
            if std::fs::rename(&staging, &venv).is_err() {
                // Another process won the race; use its venv.
                let _ = std::fs::remove_dir_all(&staging);
            }
            // Only the venv's python is run (a symlink that finds the venv from its own place),
            // so the rename does not break it.
            Ok(py)
        })
        .clone()
}

/// Run `script` with the SDK python; `None` (and a printed reason) when the SDKs are missing.
/// The script prints one JSON value per line; they are returned.
fn run(test: &str, script: &str, args: &[&str]) -> Option<Vec<Value>> {
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped {test}: Python SDKs unavailable: {why}");
            return None;
        }
    };
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: script failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{test}: not JSON: {l}")))
            .collect(),
    )
}

fn anthropic_reply() -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "Hello!"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 7}}),
    }
}

fn openai_sse() -> Reply {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    Reply::Sse {
        events: vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
            ),
            "data: [DONE]\n\n".to_owned(),
        ],
        gate: None,
    }
}

const GOOGLE_GENAI_TOOLS: &str = r#"
import json, sys
from google import genai
from google.genai import types
c = genai.Client(api_key="sk-ant-oat-ccproxy-a", http_options=types.HttpOptions(base_url=sys.argv[1]))
tool = types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", description="Weather", parameters=types.Schema(
        type="OBJECT", properties={"city": types.Schema(type="STRING"),
                                   "unit": types.Schema(type="STRING", enum=["C", "F"], nullable=True)},
        required=["city"])),
    types.FunctionDeclaration(name="search", parameters_json_schema={
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
])
r = c.models.generate_content(model="claude-haiku-4-5-20251001", contents="Weather in Paris?",
    config=types.GenerateContentConfig(tools=[tool], system_instruction="Be brief.", max_output_tokens=64,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
calls = [{"name": p.function_call.name, "args": dict(p.function_call.args)} for p in r.candidates[0].content.parts if p.function_call]
print(json.dumps({"text": r.text, "calls": calls, "usage": r.usage_metadata.prompt_token_count}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn google_genai_default_client_with_tools_reaches_an_anthropic_provider() {
    let mock = MockUpstream::start(anthropic_reply()).await;
    let gw = Gateway::start(&providers(&[provider(
        "a",
        "anthropic",
        &mock,
        "      auth: echo tok-a\n",
    )]));
    let base = gw.base.clone();
    let Some(out) = tokio::task::spawn_blocking(move || {
        run("google_genai_tools", GOOGLE_GENAI_TOOLS, &[&base])
    })
    .await
    .unwrap() else {
        return;
    };
    assert_eq!(out[0]["text"], "Hello!");
    assert_eq!(
        out[0]["calls"],
        json!([{"name": "get_weather", "args": {"city": "Paris"}}])
    );
    assert_eq!(out[0]["usage"], 12);
    let sent = &mock.requests()[0];
    // google-genai 3.x posts /v1/models/{m}:generateContent: recognised and translated.
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("authorization"), Some("Bearer tok-a"));
    let body = sent.json();
    assert_eq!(body["model"], "claude-haiku-4-5-20251001");
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    // Upper-case OpenAPI types became JSON Schema; the snake_case JSON-Schema spelling was read.
    assert_eq!(
        body["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {"city": {"type": "string"},
               "unit": {"type": ["string", "null"], "enum": ["C", "F", null]}}, "required": ["city"]})
    );
    assert_eq!(
        body["tools"][1]["input_schema"],
        json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    );
}

const GOOGLE_GENAI_STREAM: &str = r#"
import json, sys
from google import genai
from google.genai import types
c = genai.Client(api_key="sk-ant-oat-ccproxy-o", http_options=types.HttpOptions(base_url=sys.argv[1]))
for chunk in c.models.generate_content_stream(model="gpt-x", contents="hi"):
    print(json.dumps({"text": chunk.text}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn google_genai_streams_from_an_openai_provider() {
    let mock = MockUpstream::start(openai_sse()).await;
    let gw = Gateway::start(&providers(&[provider(
        "o",
        "openai",
        &mock,
        "      auth: echo tok-o\n",
    )]));
    let base = gw.base.clone();
    let Some(out) = tokio::task::spawn_blocking(move || {
        run("google_genai_stream", GOOGLE_GENAI_STREAM, &[&base])
    })
    .await
    .unwrap() else {
        return;
    };
    let text: String = out
        .iter()
        .filter_map(|v| v["text"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(text, "Hello");
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.json()["stream"], true);
}

const OPENAI_CHAT_AND_EMBEDDINGS: &str = r#"
import json, sys
from openai import OpenAI
c = OpenAI(api_key="sk-ant-oat-ccproxy-a", base_url=sys.argv[1] + "/v1")
r = c.chat.completions.create(model="claude-haiku-4-5-20251001", max_tokens=32,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
m = r.choices[0].message
print(json.dumps({"text": m.content, "tool": m.tool_calls[0].function.name, "args": json.loads(m.tool_calls[0].function.arguments),
                  "finish": r.choices[0].finish_reason, "tokens": r.usage.total_tokens}))
e = OpenAI(api_key="sk-ant-oat-ccproxy-e", base_url=sys.argv[1] + "/v1").embeddings.create(model="emb-1", input="hi")
print(json.dumps({"dims": len(e.data[0].embedding)}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_chat_on_an_anthropic_provider_and_embeddings_forwarded() {
    let anthropic = MockUpstream::start(anthropic_reply()).await;
    let embeddings = MockUpstream::start(Reply::Json {
        status: 200,
        body: json!({"object": "list", "model": "emb-1", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                     "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    })
    .await;
    let gw = Gateway::start(&providers(&[
        provider("a", "anthropic", &anthropic, "      auth: echo tok-a\n"),
        provider("e", "openai", &embeddings, "      auth: echo tok-e\n"),
    ]));
    let base = gw.base.clone();
    let Some(out) = tokio::task::spawn_blocking(move || {
        run("openai_chat", OPENAI_CHAT_AND_EMBEDDINGS, &[&base])
    })
    .await
    .unwrap() else {
        return;
    };
    assert_eq!(
        out[0],
        json!({"text": "Hello!", "tool": "get_weather", "args": {"city": "Paris"}, "finish": "tool_calls", "tokens": 19})
    );
    assert_eq!(out[1], json!({"dims": 3}));
    assert_eq!(anthropic.requests()[0].path, "/v1/messages");
    let e = &embeddings.requests()[0];
    assert_eq!(e.path, "/v1/embeddings");
    assert_eq!(e.header("authorization"), Some("Bearer tok-e"));
}

const ANTHROPIC_STREAM: &str = r#"
import json, sys
import anthropic
c = anthropic.Anthropic(api_key="sk-ant-oat-ccproxy-o", base_url=sys.argv[1])
with c.messages.stream(model="gpt-x", max_tokens=32, messages=[{"role": "user", "content": "hi"}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
print(json.dumps({"text": text, "stop": final.stop_reason, "out": final.usage.output_tokens}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_sdk_streams_from_an_openai_provider() {
    let mock = MockUpstream::start(openai_sse()).await;
    let gw = Gateway::start(&providers(&[provider(
        "o",
        "openai",
        &mock,
        "      auth: echo tok-o\n",
    )]));
    let base = gw.base.clone();
    let Some(out) =
        tokio::task::spawn_blocking(move || run("anthropic_stream", ANTHROPIC_STREAM, &[&base]))
            .await
            .unwrap()
    else {
        return;
    };
    assert_eq!(
        out[0],
        json!({"text": "Hello", "stop": "end_turn", "out": 2})
    );
}

const GOOGLE_GENAI_CODE_ASSIST: &str = r#"
import json, sys
from google import genai
from google.genai import types
c = genai.Client(api_key="sk-ant-oat-ccproxy-gemini", http_options=types.HttpOptions(base_url=sys.argv[1]))
r = c.models.generate_content(model="gemini-2.5-flash", contents="hi")
print(json.dumps({"text": r.text}))
for chunk in c.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
    print(json.dumps({"chunk": chunk.text}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn google_genai_through_gemini_code_assist() {
    let mock = MockUpstream::start(crate::code_assist::cloudcode(Some("p1"))).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = crate::code_assist::gateway(&mock, &dir);
    let base = gw.base.clone();
    let Some(out) = tokio::task::spawn_blocking(move || {
        run(
            "google_genai_code_assist",
            GOOGLE_GENAI_CODE_ASSIST,
            &[&base],
        )
    })
    .await
    .unwrap() else {
        return;
    };
    assert_eq!(
        out[0]["text"], "Hello",
        "the SDK parsed the unwrapped answer"
    );
    let chunks: String = out[1..]
        .iter()
        .filter_map(|v| v["chunk"].as_str())
        .collect();
    assert_eq!(chunks, "Hello");
    let calls = crate::code_assist::generate_calls(&mock);
    assert_eq!(calls[0].path, "/v1internal:generateContent");
    assert_eq!(calls[1].path, "/v1internal:streamGenerateContent?alt=sse");
    assert!(calls[0]
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("GeminiCLI/0.36.0/gemini-2.5-flash")));
    assert_eq!(calls[0].json()["project"], "p1");
}
