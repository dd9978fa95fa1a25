//! `gemini_cli` (outbound): sends Gemini requests to Gemini Code Assist the way Gemini CLI does
//! (spec §8.1–8.3), for providers of format `gemini` with a `google_oauth` credential.
//!
//! `…/models/{model}:{action}` (generateContent, streamGenerateContent, countTokens) becomes
//! `/v1internal:{action}` on the provider's host (`?alt=sse` for streams), the body goes into the
//! Code Assist envelope with a deterministic session id ([`code_assist::wrap`]), and clients of
//! the `google-genai` SDK get Gemini CLI's user agent. Whether the answer is a stream is decided
//! by the action, never by a body field (the original's latent bug: Gemini bodies have no
//! `stream`). The response side unwraps `{"response": …}` ([`code_assist::Unwrap`]).

use crate::code_assist::{self, Envelope};
use crate::hooks::registry::{no_params, HookSpec};
use crate::hooks::{Hook, HookContext, HookError, Stage};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub const SPEC: HookSpec = HookSpec {
    name: "gemini_cli",
    stage: Stage::Outbound,
    reads: &["model", "contents", "request", "user-agent"],
    writes: &["*", ":path", "user-agent", "x-goog-api-client"],
    summary: "send Gemini requests to Code Assist (cloudcode-pa) in its envelope",
    build: |p| {
        no_params(p)?;
        Ok(Arc::new(GeminiCli))
    },
};

struct GeminiCli;

fn provider<'a>(cx: &'a HookContext<'_>) -> Option<&'a Arc<crate::config::Provider>> {
    let name = cx.meta.routed_provider.as_deref()?;
    cx.providers
        .get(name)
        .filter(|p| code_assist::is_code_assist(p))
}

#[async_trait::async_trait]
impl Hook for GeminiCli {
    fn guard(&self, cx: &HookContext<'_>) -> bool {
        provider(cx).is_some() && code_assist::action_of(cx.headers.uri.path()).is_some()
    }

    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError> {
        let path = cx.headers.uri.path().to_owned();
        let Some(action) = code_assist::action_of(&path) else {
            return Ok(());
        };
        let learned = provider(cx).map(|p| p.learned.clone());
        let project = match learned {
            Some(l) => {
                l.project(code_assist::PREWARM_TIMEOUT + Duration::from_secs(1))
                    .await
            }
            None => None,
        };
        let request_id = cx.meta.request_id.clone();
        let model = cx
            .meta
            .fallback_model
            .clone()
            .or_else(|| code_assist::model_in_path(&path).map(str::to_owned))
            .or_else(|| cx.body.str_field("model"))
            .or_else(|| {
                cx.body
                    .field::<Value>("request")
                    .and_then(|r| r.get("model")?.as_str().map(str::to_owned))
            })
            .or_else(|| cx.meta.client_model.clone())
            .ok_or_else(|| HookError::soft("no model in the path or the body"))?;
        let Some(body) = cx.body.json_mut() else {
            return Err(HookError::soft("the request body is not JSON"));
        };
        let conversation = crate::conversation::conversation_id(body, &request_id);
        let session = code_assist::session_id(&model, project.as_deref(), &conversation);
        let taken = std::mem::take(body);
        *body = code_assist::wrap(taken, &model, project.as_deref(), &session);
        if cx.meta.fallback_model.is_some() {
            // A pre-wrapped body keeps its own `model` otherwise.
            body["model"] = Value::String(model.clone());
        }

        let uri = code_assist::upstream_path(action)
            .parse::<http::Uri>()
            .map_err(|e| HookError::soft(format!("bad Code Assist path: {e}")))?;
        cx.headers.set_uri(uri);
        cx.headers.remove_header("x-goog-api-key");
        let from_sdk = cx
            .header("user-agent")
            .is_some_and(|ua| ua.contains("google-genai-sdk/"));
        if from_sdk {
            let ua = code_assist::CLI_USER_AGENT.replace("{model}", &model);
            cx.headers
                .insert_header("user-agent", ua)
                .map_err(|e| HookError::soft(e.to_string()))?;
            cx.headers
                .insert_header("x-goog-api-client", code_assist::CLI_API_CLIENT)
                .map_err(|e| HookError::soft(e.to_string()))?;
        }
        cx.meta.code_assist = Some(Envelope {
            streaming: action == "streamGenerateContent",
        });
        cx.meta.sent_model = Some(model);
        Ok(())
    }
}
