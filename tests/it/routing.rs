//! Routing (spec §4.3, §16.1 cases 1–3, 5): synthetic routes, sentinel keys, transform rules,
//! and what reaches the upstream.

use crate::support::mock::{MockUpstream, Recorded, Reply};
use crate::support::tls::TestCa;
use crate::support::{client, json, provider, providers, sentinel_bearer, sentinel_post, Gateway};
use serde_json::json;

fn ok_json() -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"id": "msg_1", "type": "message", "content": []}),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_root_say_hey_as_plain_text() {
    let gw = Gateway::start("");
    for path in ["/", "/health"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.text().await.unwrap(), "ccproxy says hey!");
    }
    // Only GET/HEAD are synthetic: a POST to /health is an ordinary (unroutable) request.
    let r = client().post(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 501);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_catalog_keeps_the_floor_list_when_the_live_list_fails() {
    // The mock answers every path with a chat reply, not a model list.
    let mock = MockUpstream::start(ok_json()).await;
    let gw = Gateway::with_provider("anthropic", "anthropic", &mock, "");
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"claude-haiku-4-5-20251001"), "{ids:?}");
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["owned_by"] == "anthropic" && m["object"] == "model"));
    // One live-list attempt; its failure is not retried on the next catalog request.
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.requests()[0].path, "/v1/models");
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_catalog_lists_live_models_first_then_the_floor() {
    let list = |ids: &[&str]| Reply::Json {
        status: 200,
        body: json!({"data": ids.iter().map(|id| json!({"id": id, "type": "model"})).collect::<Vec<_>>(), "has_more": false}),
    };
    let anthropic = MockUpstream::start(list(&["claude-live-9", "claude-sonnet-4-6"])).await;
    let router = MockUpstream::start(Reply::script(move |r: &Recorded, _| {
        if r.path == "/api/v1/models" {
            Reply::Json {
                status: 200,
                body: json!({"data": [{"id": "openai/gpt-5"}]}),
            }
        } else {
            Reply::Status(404)
        }
    }))
    .await;
    let gw = Gateway::start(&providers(&[
        provider(
            "anthropic",
            "anthropic",
            &anthropic,
            "      auth:\n        command: echo sk-ant-api03-key\n        header: x-api-key\n",
        ),
        provider(
            "openrouter",
            "openai",
            &router,
            "      path: /api/v1/chat/completions\n      auth: echo sk-or-key\n",
        ),
    ]));
    let v = json(client().get(gw.url("/v1/models")).send().await.unwrap()).await;
    let entries: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["owned_by"].as_str().unwrap().to_owned(),
                m["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let anth: Vec<&str> = entries
        .iter()
        .filter(|(o, _)| o == "anthropic")
        .map(|(_, id)| id.as_str())
        .collect();
    // Live first, then the floor without the duplicate.
    assert_eq!(
        anth,
        [
            "claude-live-9",
            "claude-sonnet-4-6",
            "claude-opus-4-7",
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5-20251001"
        ]
    );
    assert!(entries.contains(&("openrouter".to_owned(), "openai/gpt-5".to_owned())));
    let seen = &anthropic.requests()[0];
    assert_eq!(seen.path, "/v1/models");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-api03-key"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        router.requests()[0].header("authorization"),
        Some("Bearer sk-or-key")
    );
    // Fresh lists are served from memory.
    let _ = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(anthropic.request_count(), 1);
    assert_eq!(router.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_answers_spec_501_body() {
    let gw = Gateway::start("");
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-real")
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert_eq!(
        json(r).await,
        json!({"error": {"message": "no provider or transform rule matched this request", "type": "not_implemented_error", "code": 501}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_in_x_api_key_routes_to_provider_with_bearer_token() {
    let mock = MockUpstream::start(ok_json()).await;
    let gw = Gateway::with_provider(
        "anthropic",
        "anthropic",
        &mock,
        "      path: /v1/messages\n      auth:\n        command: echo tok123\n",
    );
    let body = br#"{"model":"claude-haiku-4-5-20251001", "max_tokens": 5,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sentinel_post(&gw, "/v1/messages?beta=true", "anthropic")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-ccproxy-request-id"));
    let got = &mock.requests()[0];
    assert_eq!(got.method, "POST");
    // The client's query survives the path template (deliberate: Claude Code sends ?beta=true).
    assert_eq!(got.path, "/v1/messages?beta=true");
    assert_eq!(got.header("authorization"), Some("Bearer tok123"));
    assert!(!got.has_header("x-api-key"));
    assert_eq!(got.header("host"), Some(mock.host_port().as_str()));
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    // An untouched body is forwarded byte for byte (no re-serialization, fixing spec §5.5 LB).
    assert_eq!(&got.body[..], &body[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_with_auth_header_puts_raw_token_in_that_header() {
    let mock = MockUpstream::start(ok_json()).await;
    let gw = Gateway::with_provider("deepseek",
        "anthropic",
        &mock,
        "      path: /anthropic/v1/messages\n      auth:\n        command: echo tok123\n        header: x-api-key\n");
    let r = sentinel_bearer(&gw, "/v1/messages", "deepseek")
        .json(&json!({"model": "deepseek-v4", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = &mock.requests()[0];
    assert_eq!(got.path, "/anthropic/v1/messages");
    assert_eq!(got.header("x-api-key"), Some("tok123"));
    assert!(!got.has_header("authorization"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_in_goog_key_and_file_credential() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "file-tok\n").unwrap();
    let gw = Gateway::start_in(
        dir,
        &providers(&[provider(
            "gemini",
            "gemini",
            &mock,
            "      auth:\n        file: token\n        header: x-goog-api-key\n",
        )]),
    );
    let r = client()
        .post(gw.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-gemini")
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = &mock.requests()[0];
    // No path template: the client's path is kept.
    assert_eq!(got.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(got.header("x-goog-api-key"), Some("file-tok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn path_template_fills_model_and_action_and_keeps_count_tokens_suffix() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&providers(&[
        provider(
            "g",
            "gemini",
            &mock,
            "      path: /v1internal:{action}\n      auth: echo t\n",
        ),
        provider(
            "a",
            "anthropic",
            &mock,
            "      path: /v1/messages\n      auth: echo t\n",
        ),
    ]));
    client()
        .post(gw.url("/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent"))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-g")
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    sentinel_post(&gw, "/v1/messages/count_tokens", "a")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    let reqs = mock.requests();
    assert_eq!(reqs[0].path, "/v1internal:streamGenerateContent");
    assert_eq!(reqs[1].path, "/v1/messages/count_tokens");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_sentinel_provider_is_501_naming_it_and_never_forwarded() {
    let mock = MockUpstream::start(ok_json()).await;
    let gw = Gateway::with_provider("anthropic", "anthropic", &mock, "");
    let r = sentinel_post(&gw, "/v1/messages", "nope")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    let v = json(r).await;
    assert_eq!(
        v["type"], "error",
        "Anthropic error shape for /v1/messages: {v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("'nope'") && msg.contains("providers.nope"),
        "{msg}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_credential_command_is_502_naming_provider() {
    let mock = MockUpstream::start(ok_json()).await;
    let gw = Gateway::with_provider(
        "anthropic",
        "anthropic",
        &mock,
        "      auth: \"echo broken >&2; exit 4\"\n",
    );
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "anthropic")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v = json(r).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("provider 'anthropic'"), "{msg}");
    assert!(msg.contains("exit status: 4"), "{msg}");
    // The command's stderr stays in the gateway log; clients only learn that it failed.
    assert!(!msg.contains("broken"), "{msg}");
    assert_eq!(
        v["error"]["code"], 502,
        "OpenAI shape for chat completions: {v}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_api_paths_are_forwarded_with_the_credential() {
    // Embeddings, files, model lookups: nothing to translate, so the request goes to the
    // provider as it is, with the provider's credential and the client's path and query.
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::with_provider("o", "openai", &mock, "      auth: echo tok-o\n");
    let r = sentinel_bearer(&gw, "/v1/embeddings?x=1", "o")
        .json(&json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(gw.url("/v1/models/ft:gpt-4o-mini:acme::abc123"))
        .bearer_auth("sk-ant-oat-ccproxy-o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = mock.requests();
    assert_eq!(seen[0].path, "/v1/embeddings?x=1");
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok-o"));
    assert_eq!(
        seen[0].json(),
        json!({"model": "text-embedding-3-small", "input": "hi"})
    );
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].path, "/v1/models/ft:gpt-4o-mini:acme::abc123");
    assert_eq!(seen[1].header("authorization"), Some("Bearer tok-o"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_api_paths_keep_the_providers_base_path() {
    // A provider mounted under a prefix (DeepSeek's /anthropic, Zhipu's /api/paas/v4): an
    // unknown path goes below that base.
    let a = MockUpstream::start(Reply::Echo).await;
    let o = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&providers(&[
        provider(
            "ds",
            "anthropic",
            &a,
            "      path: /anthropic/v1/messages\n      auth: echo tok-a\n",
        ),
        provider(
            "zp",
            "openai",
            &o,
            "      path: /api/paas/v4/chat/completions\n      auth: echo tok-z\n",
        ),
    ]));
    let r = sentinel_post(&gw, "/v1/files", "ds")
        .body("raw upload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = sentinel_bearer(&gw, "/v1/embeddings", "zp")
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.requests()[0].path, "/anthropic/v1/files");
    assert_eq!(a.requests()[0].body_text(), "raw upload");
    assert_eq!(
        a.requests()[0].header("authorization"),
        Some("Bearer tok-a")
    );
    assert_eq!(o.requests()[0].path, "/api/paas/v4/embeddings");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_endpoint_without_a_translation_answers_501() {
    // Gemini countTokens is a Gemini API endpoint, but not one ccproxy translates to Anthropic.
    let mock = MockUpstream::start(ok_json()).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo tok\n");
    let r = client()
        .post(gw.url("/v1beta/models/gemini-2.5-flash:countTokens"))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-a")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    let v = json(r).await;
    assert_eq!(v["error"]["status"], "UNIMPLEMENTED", "Gemini shape: {v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("translation not available"), "{msg}");
    assert!(
        msg.contains(":countTokens") && msg.contains("anthropic"),
        "{msg}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_routes_a_large_body_by_its_model_before_sentinel() {
    let big = MockUpstream::start(Reply::Echo).await;
    let small = MockUpstream::start(Reply::Echo).await;
    let cfg = format!(
        "{}  inspector:\n    transforms:\n      - match_model: \"^big-\"\n        dest_provider: big\n",
        providers(&[
            provider("big", "anthropic", &big, "      auth: echo bigtok\n"),
            provider("small", "anthropic", &small, "      auth: echo smalltok\n"),
        ])
    );
    let gw = Gateway::start(&cfg);
    // > 64 KiB, with the model at the very end so routing needs the whole body.
    let filler = "x".repeat(200 * 1024);
    let body =
        format!(r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"big-model"}}"#);
    for (model_body, sentinel) in [
        (body.clone(), "sk-ant-oat-ccproxy-small"),
        (
            body.replace("big-model", "tiny-model"),
            "sk-ant-oat-ccproxy-small",
        ),
    ] {
        let r = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", sentinel)
            .header("content-type", "application/json")
            .body(model_body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(big.request_count(), 1);
    assert_eq!(small.request_count(), 1);
    let got = &big.requests()[0];
    assert_eq!(got.body.len(), body.len());
    assert_eq!(&got.body[..], body.as_bytes());
    // The rule's provider supplies the credential (its auth.header is honoured; spec §4.3 LB).
    assert_eq!(got.header("authorization"), Some("Bearer bigtok"));
    assert_eq!(
        small.requests()[0].header("authorization"),
        Some("Bearer smalltok")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_matches_path_and_host_and_rewrites_dest_path() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let cfg = format!(
        "{}  inspector:\n    transforms:\n      - match_host: \"^api\\\\.example\\\\.test$\"\n        match_path: \"^/custom/\"\n        dest_provider: local\n        dest_path: /v1/{{model}}/run\n",
        providers(&[provider("local", "openai", &mock, "")])
    );
    let gw = Gateway::start(&cfg);
    let r = client()
        .post(gw.url("/custom/x?q=1"))
        .header("host", "api.example.test:4000")
        .json(&json!({"model": "m7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests()[0].path, "/v1/m7/run?q=1");
    // Host does not match: no rule, no sentinel.
    let r = client()
        .post(gw.url("/custom/x"))
        .json(&json!({"model": "m7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_rule_on_reverse_listener_is_502_not_a_silent_forward() {
    let gw = Gateway::start(
        "  inspector:\n    transforms:\n      - match_path: \"^/p\"\n        action: passthrough\n",
    );
    let r = client().post(gw.url("/p")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let v = json(r).await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no original destination"));
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_headers_are_never_forwarded() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo t\n");
    sentinel_post(&gw, "/v1/messages", "a")
        .header("x-ccproxy-hooks", "-verbose_mode")
        .header("x-ccproxy-flow-id", "abc")
        .header("x-other", "kept")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    let got = &mock.requests()[0];
    assert!(
        got.headers
            .iter()
            .all(|(k, _)| !k.starts_with("x-ccproxy-")),
        "{:?}",
        got.headers
    );
    assert_eq!(got.header("x-other"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstream_verified_with_configured_ca_file() {
    let ca = TestCa::new();
    let mock = MockUpstream::start_tls(ok_json(), &ca).await;
    let other = MockUpstream::start_tls(ok_json(), &ca).await;
    let entry = |name: &str, port: u16, ca_line: &str| {
        format!(
            "    {name}:\n      host: localhost:{port}\n      provider: anthropic\n      auth: echo t\n{ca_line}"
        )
    };
    let gw = Gateway::start(&providers(&[
        entry(
            "trusted",
            mock.port(),
            &format!("      ca_file: {}\n", ca.ca_file.display()),
        ),
        entry("untrusted", other.port(), ""),
    ]));
    let send = |p: &str| {
        client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", format!("sk-ant-oat-ccproxy-{p}"))
            .json(&json!({"model": "m", "stream": false}))
            .send()
    };
    let r = send("trusted").await.unwrap();
    assert_eq!(r.status(), 200);
    let got = &mock.requests()[0];
    assert_eq!(got.header("authorization"), Some("Bearer t"));

    let r = send("untrusted").await.unwrap();
    assert_eq!(r.status(), 502);
    let v = json(r).await;
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("TLS"),
        "{v}"
    );
    assert_eq!(other.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_oauth_token_gets_the_oauth_beta_api_keys_do_not() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&providers(&[
        provider(
            "sub",
            "anthropic",
            &mock,
            "      auth: echo sk-ant-oat01-abc\n",
        ),
        provider(
            "key",
            "anthropic",
            &mock,
            "      auth:\n        command: echo sk-ant-api03-xyz\n        header: x-api-key\n",
        ),
    ]));
    for (p, beta) in [("sub", Some("foo")), ("sub", None), ("key", None)] {
        let mut req = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", format!("sk-ant-oat-ccproxy-{p}"));
        if let Some(b) = beta {
            req = req.header("anthropic-beta", b);
        }
        assert_eq!(
            req.json(&json!({"model": "m"}))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let reqs = mock.requests();
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Bearer sk-ant-oat01-abc")
    );
    assert_eq!(
        reqs[0].header("anthropic-beta"),
        Some("foo,oauth-2025-04-20")
    );
    assert_eq!(reqs[1].header("anthropic-beta"), Some("oauth-2025-04-20"));
    assert_eq!(reqs[2].header("x-api-key"), Some("sk-ant-api03-xyz"));
    assert!(!reqs[2].has_header("anthropic-beta"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_to_a_host_without_provider_never_receives_the_sentinel_credential() {
    let ca = TestCa::new();
    let elsewhere = MockUpstream::start_tls(Reply::Echo, &ca).await;
    let owner = MockUpstream::start(Reply::Echo).await;
    let cfg = format!(
        "  ca_file: {}\n{}  inspector:\n    transforms:\n      - match_path: \"^/v1/messages\"\n        dest_host: localhost:{}\n",
        ca.ca_file.display(),
        providers(&[provider("a", "anthropic", &owner, "      auth: echo secret-tok\n")]),
        elsewhere.port()
    );
    let gw = Gateway::start(&cfg);
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = &elsewhere.requests()[0];
    assert!(
        !got.has_header("authorization") && !got.has_header("x-api-key"),
        "{:?}",
        got.headers
    );
    assert_eq!(owner.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_trust_stays_per_provider_on_a_shared_host() {
    let ca = TestCa::new();
    let mock = MockUpstream::start_tls(ok_json(), &ca).await;
    let entry = |name: &str, ca_line: &str| {
        format!(
            "    {name}:\n      host: localhost:{}\n      provider: anthropic\n      auth: echo t\n{ca_line}",
            mock.port()
        )
    };
    let gw = Gateway::start(&providers(&[
        entry(
            "trusted",
            &format!("      ca_file: {}\n", ca.ca_file.display()),
        ),
        entry("untrusted", ""),
    ]));
    let send = |p: &str| {
        client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", format!("sk-ant-oat-ccproxy-{p}"))
            .json(&json!({"model": "m"}))
            .send()
    };
    assert_eq!(send("trusted").await.unwrap().status(), 200);
    // A pooled connection verified with the first provider's CA must not serve the second.
    assert_eq!(send("untrusted").await.unwrap().status(), 502);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn inspector_resolve_pins_a_host_to_an_address() {
    let mock = MockUpstream::start(ok_json()).await;
    // A name that has no DNS answer anywhere: only the override makes it reachable.
    let gw = Gateway::start(&format!(
        "  providers:\n    local:\n      host: models.invalid:8000\n      scheme: http\n      provider: openai\n      auth: echo k\n  inspector:\n    resolve:\n      Models.Invalid: {}\n",
        mock.addr()
    ));
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "local")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = &mock.requests()[0];
    assert_eq!(
        seen.header("host"),
        Some("models.invalid:8000"),
        "the request still names the host"
    );
}
