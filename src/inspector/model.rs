//! What a stored flow is: the JSON shapes the admin API serves and the store keeps.
//!
//! A [`Flow`] is one exchange through the gateway, keyed by its request id. Its summary fields
//! (the list view) are columns in the store plus one JSON document; the rest ([`Detail`]:
//! messages, timings, hooks, loss) is a second JSON document, and the four bodies one blob
//! beside them.

use serde::{Deserialize, Serialize};

/// Request header that links a replayed request to its original flow.
pub const REPLAY_HEADER: &str = "x-ccproxy-replay-of";

/// Names of the four bodies a flow can hold, in the order they happen.
pub const PARTS: [&str; 4] = [
    "client_request",
    "forwarded_request",
    "provider_response",
    "client_response",
];

/// Token usage of an LLM exchange, as the provider reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Cache read / (input + cache read + cache write), `None` when nothing was sent.
    pub fn cache_hit_ratio(&self) -> Option<f64> {
        let total = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens;
        (total > 0).then(|| self.cache_read_tokens as f64 / total as f64)
    }
}

/// The error the client got from the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowError {
    pub kind: String,
    pub message: String,
}

/// The list view of a flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The request id (`x-ccproxy-request-id`).
    pub id: String,
    /// Order of arrival (also across restarts).
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub started_at: String,
    pub started_ms: u64,
    /// Listener kind (`reverse`).
    pub ingress: String,
    /// `open` while in flight, `done` after.
    pub state: String,
    pub method: String,
    pub host: String,
    /// Path with query (credential query parameters redacted).
    pub path: String,
    /// Status the client got; 0 = none yet.
    pub status: u16,
    pub provider: String,
    pub action: String,
    pub client_format: Option<String>,
    pub provider_format: Option<String>,
    pub model: Option<String>,
    pub session_id: Option<String>,
    pub conversation_id: Option<String>,
    /// The provider answered with an event stream.
    pub streamed: bool,
    pub duration_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub usage: Option<Usage>,
    pub error: Option<FlowError>,
    pub user_agent: Option<String>,
    /// The flow this one replays (`ccproxy flows replay`, header `x-ccproxy-replay-of`).
    #[serde(default)]
    pub replay_of: Option<String>,
}

/// A captured body: where it is (in the store), how big it was, whether it was cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyInfo {
    /// Bytes stored.
    pub size: u64,
    /// Bytes seen.
    pub total: u64,
    pub truncated: bool,
    pub content_type: Option<String>,
}

/// One HTTP message of a flow (headers redacted at capture).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// `None` = no body.
    pub body: Option<BodyInfo>,
}

impl Message {
    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Milliseconds from the request's arrival to each step (`None` = not reached).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub upstream_sent_ms: Option<f64>,
    /// The provider's response head.
    pub first_byte_ms: Option<f64>,
    pub last_byte_ms: Option<f64>,
    pub done_ms: Option<f64>,
    /// First response body byte (the first event of a stream).
    pub ttft_ms: Option<f64>,
}

/// A hook that ran on the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    pub stage: String,
    pub name: String,
    pub changed: bool,
}

/// Everything about a flow except the body bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    #[serde(flatten)]
    pub summary: Summary,
    pub system_prompt_sha: Option<String>,
    pub attempts: u32,
    /// Why each attempt after the first was made (`stale_connection`, `auth_refresh`,
    /// `capacity`).
    #[serde(default)]
    pub retries: Vec<String>,
    pub loss: Vec<String>,
    pub hooks: Vec<HookRun>,
    pub timings: Timings,
    pub client_request: Message,
    pub forwarded_request: Option<Message>,
    pub provider_response: Option<Message>,
    /// Present when the client got something other than the provider's bytes (a translated
    /// route, or the gateway's own answer).
    pub client_response: Option<Message>,
}

/// A flow without its summary: what the store keeps as one JSON document beside the summary
/// (which it keeps once, in its own column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    pub system_prompt_sha: Option<String>,
    pub attempts: u32,
    /// Why each attempt after the first was made (`stale_connection`, `auth_refresh`,
    /// `capacity`).
    #[serde(default)]
    pub retries: Vec<String>,
    pub loss: Vec<String>,
    pub hooks: Vec<HookRun>,
    pub timings: Timings,
    pub client_request: Message,
    pub forwarded_request: Option<Message>,
    pub provider_response: Option<Message>,
    pub client_response: Option<Message>,
}

impl Flow {
    /// The flow as its summary and the rest.
    pub fn split(self) -> (Summary, Detail) {
        let Flow {
            summary,
            system_prompt_sha,
            attempts,
            retries,
            loss,
            hooks,
            timings,
            client_request,
            forwarded_request,
            provider_response,
            client_response,
        } = self;
        (
            summary,
            Detail {
                system_prompt_sha,
                attempts,
                retries,
                loss,
                hooks,
                timings,
                client_request,
                forwarded_request,
                provider_response,
                client_response,
            },
        )
    }

    /// The flow made of its summary and the rest ([`Flow::split`] undone).
    pub fn join(summary: Summary, d: Detail) -> Self {
        Flow {
            summary,
            system_prompt_sha: d.system_prompt_sha,
            attempts: d.attempts,
            retries: d.retries,
            loss: d.loss,
            hooks: d.hooks,
            timings: d.timings,
            client_request: d.client_request,
            forwarded_request: d.forwarded_request,
            provider_response: d.provider_response,
            client_response: d.client_response,
        }
    }

    /// The message a body part belongs to.
    pub fn message(&self, part: &str) -> Option<&Message> {
        match part {
            "client_request" => Some(&self.client_request),
            "forwarded_request" => self.forwarded_request.as_ref(),
            "provider_response" => self.provider_response.as_ref(),
            "client_response" => self.client_response.as_ref(),
            _ => None,
        }
    }
}

/// A change the live feed reports.
#[derive(Debug, Clone)]
pub enum Event {
    Created(Box<Summary>),
    Updated(Box<Summary>),
    Deleted(String),
    Cleared,
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created(_) => "created",
            Self::Updated(_) => "updated",
            Self::Deleted(_) => "deleted",
            Self::Cleared => "cleared",
        }
    }

    /// The SSE data line.
    pub fn data(&self) -> String {
        match self {
            Self::Created(s) | Self::Updated(s) => serde_json::to_string(s).unwrap_or_default(),
            Self::Deleted(id) => serde_json::json!({ "id": id }).to_string(),
            Self::Cleared => "{}".to_owned(),
        }
    }
}
