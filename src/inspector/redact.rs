//! Redaction: what of a credential may reach the flow store (applied by the store's writer to
//! every captured header and URL before anything is written).
//!
//! Credential headers keep only a short prefix that names the kind of key
//! (`Bearer sk-ant-oat01-…`), cookies keep their names, and credential query parameters
//! (`?key=` of the Gemini API) keep nothing. ccproxy's own sentinel keys
//! (`sk-ant-oat-ccproxy-<provider>`) carry no secret and stay readable. This runs before
//! anything is stored, so no credential value can reach the database, the HAR or the viewer.

/// Headers whose values are credentials.
const SECRET_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "set-cookie",
];

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 4] = ["key", "api_key", "access_token", "token"];

/// The sentinel prefix; values that start with it name a provider, not a secret.
const SENTINEL: &str = "sk-ant-oat-ccproxy-";

/// Whether `name` is a credential header.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The value of header `name` as it may be stored.
pub fn header_value(name: &str, value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    if !is_secret_header(name) {
        return text.into_owned();
    }
    if name.eq_ignore_ascii_case("cookie") || name.eq_ignore_ascii_case("set-cookie") {
        return cookie(&text);
    }
    let (scheme, token) = match text.split_once(' ') {
        Some((s, t)) if !s.is_empty() && !s.contains('=') => (Some(s), t.trim_start()),
        _ => (None, text.as_ref()),
    };
    let kept = if token.starts_with(SENTINEL) {
        token.to_owned()
    } else {
        format!("{}…", key_prefix(token))
    };
    match scheme {
        Some(s) => format!("{s} {kept}"),
        None => kept,
    }
}

/// The part of a key that says what kind it is (`sk-ant-oat01-`), never more than a third of
/// it and at most 16 characters.
fn key_prefix(token: &str) -> &str {
    if token.len() < 12 {
        // Too short for any of it to be safe to show.
        return "";
    }
    let limit = (token.len() / 3).min(16);
    let mut end = 0;
    for (i, c) in token.char_indices() {
        if i + c.len_utf8() > limit {
            break;
        }
        if c == '-' || c == '_' || c == '.' {
            end = i + 1;
        }
    }
    if end == 0 {
        // No separator: a few characters at most.
        let short = limit.min(4);
        end = token
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take_while(|&e| e <= short)
            .last()
            .unwrap_or(0);
    }
    &token[..end]
}

/// Cookie names kept, values dropped (`a=…; b=…`); attributes of `set-cookie` dropped too.
fn cookie(text: &str) -> String {
    text.split(';')
        .filter_map(|pair| {
            let name = pair.split('=').next()?.trim();
            (!name.is_empty()).then(|| format!("{name}=…"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A path with query whose credential parameters are blanked (`?key=…`).
pub fn path_and_query(pq: &str) -> String {
    let Some((path, query)) = pq.split_once('?') else {
        return pq.to_owned();
    };
    let mut out = String::with_capacity(pq.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(k)) => {
                out.push_str(k);
                out.push_str("=…");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_keep_their_kind_only() {
        let v = header_value(
            "Authorization",
            b"Bearer sk-ant-oat01-abcdefghijklmnopqrstuvwxyz0123456789",
        );
        assert_eq!(v, "Bearer sk-ant-oat01-…");
        let v = header_value("x-api-key", b"sk-proj-abcdefghijklmnopqrstuvwxyz");
        assert_eq!(v, "sk-proj-…");
    }

    #[test]
    fn keys_without_separators_keep_a_few_characters() {
        let v = header_value("authorization", b"Bearer ya29A0AbCdEfGhIjKlMnOpQrStUv");
        assert_eq!(v, "Bearer ya29…");
        assert_eq!(header_value("x-api-key", b"abc"), "…");
    }

    #[test]
    fn sentinels_stay_readable_and_others_pass() {
        assert_eq!(
            header_value("x-api-key", b"sk-ant-oat-ccproxy-anthropic"),
            "sk-ant-oat-ccproxy-anthropic"
        );
        assert_eq!(
            header_value("content-type", b"application/json"),
            "application/json"
        );
    }

    #[test]
    fn cookies_keep_names() {
        assert_eq!(header_value("cookie", b"a=1; sid=secret"), "a=…; sid=…");
        assert_eq!(
            header_value("set-cookie", b"sid=secret; Path=/; HttpOnly"),
            "sid=…; Path=…; HttpOnly=…"
        );
    }

    #[test]
    fn query_keys_are_blanked() {
        assert_eq!(
            path_and_query("/v1beta/models/g:generateContent?alt=sse&key=AIzaSecret"),
            "/v1beta/models/g:generateContent?alt=sse&key=…"
        );
        assert_eq!(path_and_query("/v1/messages"), "/v1/messages");
    }
}
