//! Server-sent events, sans-IO: [`Decoder`] turns arbitrary byte chunks into events, whatever
//! the chunk boundaries (events end at `\n\n` or `\r\n\r\n`; multi-line `data:` is joined with
//! `\n`; comments and unknown fields are ignored); [`encode`] writes one event.

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An event grew past the decoder's limit without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge {
    pub limit: usize,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an SSE event exceeds {} bytes", self.limit)
    }
}

/// Incremental SSE decoder. Each byte is scanned once, however the stream is chunked, and an
/// incomplete event is held only up to `limit` bytes.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the search for the next separator resumes (everything before it has no newline
    /// that could still end an event).
    scanned: usize,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_limit(usize::MAX)
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses events larger than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            limit,
        }
    }

    /// Feed bytes; returns the events completed by them, or an error when an unfinished event
    /// outgrows the limit (the decoder then holds nothing).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some((end, next)) = find_boundary(&self.buf, self.scanned.max(start)) {
            if let Some(ev) = parse_event(&self.buf[start..end]) {
                out.push(ev);
            }
            start = next;
            self.scanned = next;
        }
        if start > 0 {
            self.buf.drain(..start);
            self.scanned -= start.min(self.scanned);
        }
        // Resume after the last newline that could not be decided yet.
        self.scanned = self.scanned.max(pending_from(&self.buf));
        if self.buf.len() > self.limit {
            self.buf = Vec::new();
            self.scanned = 0;
            return Err(EventTooLarge { limit: self.limit });
        }
        Ok(out)
    }

    /// End of stream: a final event without its blank line is still delivered.
    pub fn finish(&mut self) -> Option<Event> {
        self.scanned = 0;
        let rest = std::mem::take(&mut self.buf);
        parse_event(&rest)
    }
}

/// Every event of a complete stream held in memory (a captured body), the last one included
/// even without its blank line. No size limit: the caller already bounded the bytes.
pub fn decode_all(body: &[u8]) -> Vec<Event> {
    let mut decoder = Decoder::new();
    let mut events = decoder.push(body).unwrap_or_default();
    events.extend(decoder.finish());
    events
}

/// The first event separator at or after `from`: `(end of the event, start of the next)`. A
/// separator is a newline followed by another (`\n\n`), or by `\r\n` (`\r\n\r\n`, `\n\r\n`).
fn find_boundary(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', b.get(i..)?) {
        let j = i + off;
        match (b.get(j + 1), b.get(j + 2)) {
            (Some(b'\n'), _) => return Some((j, j + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((j, j + 3)),
            _ => i = j + 1,
        }
    }
    None
}

/// Where scanning must resume in `b` (a buffer with no complete separator): the last newline
/// whose following bytes have not all arrived yet, else the end.
fn pending_from(b: &[u8]) -> usize {
    let tail = b.len().saturating_sub(2);
    match memchr::memrchr(b'\n', &b[tail..]) {
        Some(off) => tail + off,
        None => b.len(),
    }
}

fn parse_event(block: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(block);
    let mut ev = Event::default();
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => data.push(value),
            "event" => ev.event = Some(value.to_owned()),
            _ => {}
        }
    }
    if data.is_empty() && ev.event.is_none() {
        return None;
    }
    ev.data = data.join("\n");
    Some(ev)
}

/// One event on the wire (`event: …` only when named), ending with a blank line.
pub fn encode(event: Option<&str>, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut d = Decoder::new();
        let mut out: Vec<Event> = chunks.iter().flat_map(|c| d.push(c).unwrap()).collect();
        out.extend(d.finish());
        out
    }

    #[test]
    fn spec_16_1_case_14_multiline_and_partial() {
        let ev = all(&[b"data: {\"type\":\ndata: \"ping\"}\n\n"]);
        assert_eq!(ev[0].data, "{\"type\":\n\"ping\"}");
        let mut d = Decoder::new();
        assert!(d.push(b"data: {\"type\":\"part").unwrap().is_empty());
        let ev = d.push(b"ial\"}\n\n").unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "{\"type\":\"partial\"}");
    }

    #[test]
    fn crlf_separators_and_event_names() {
        let ev =
            all(&[b"event: message_start\r\ndata: {}\r\n\r\n: comment\n\nevent: x\ndata: 1\n\n"]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event.as_deref(), Some("message_start"));
        assert_eq!(ev[0].data, "{}");
        assert_eq!(ev[1].data, "1");
    }

    #[test]
    fn decoding_is_invariant_under_every_split() {
        let stream: &[u8] =
            b"event: a\ndata: one\n\ndata: two\r\ndata: lines\r\n\r\n: c\n\ndata: [DONE]\n\n";
        let whole = all(&[stream]);
        assert_eq!(whole.len(), 3);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let parts = all(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(parts, whole, "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn encode_round_trips() {
        let wire = encode(Some("message_delta"), "{\"a\":1}\nsecond");
        let ev = all(&[wire.as_bytes()]);
        assert_eq!(ev[0].event.as_deref(), Some("message_delta"));
        assert_eq!(ev[0].data, "{\"a\":1}\nsecond");
    }

    #[test]
    fn a_large_event_in_tiny_chunks_is_scanned_once() {
        // Quadratic rescanning would make this take seconds; linear is instant.
        let big = format!("data: {}\n\n", "x".repeat(2_000_000));
        let mut d = Decoder::new();
        let mut events = Vec::new();
        for c in big.as_bytes().chunks(7) {
            events.extend(d.push(c).unwrap());
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 2_000_000);
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_and_nothing_is_kept() {
        let mut d = Decoder::with_limit(64);
        assert!(d.push(b"data: short\n\n").unwrap().len() == 1);
        let err = d.push(&[b'x'; 100]).unwrap_err();
        assert_eq!(err.limit, 64);
        assert!(d.finish().is_none());
    }
}
