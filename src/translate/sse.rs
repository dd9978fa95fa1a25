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

/// Incremental SSE decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns the events completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some((end, sep)) = find_boundary(&self.buf[start..]) {
            if let Some(ev) = parse_event(&self.buf[start..start + end]) {
                out.push(ev);
            }
            start += end + sep;
        }
        self.buf.drain(..start);
        out
    }

    /// End of stream: a final event without its blank line is still delivered.
    pub fn finish(&mut self) -> Option<Event> {
        let rest = std::mem::take(&mut self.buf);
        parse_event(&rest)
    }
}

/// Position and length of the first event separator (`\n\n`, `\r\n\r\n`, or `\r\r`).
fn find_boundary(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' if b.get(i + 1) == Some(&b'\n') => return Some((i, 2)),
            b'\r'
                if b.get(i + 1) == Some(&b'\n')
                    && b.get(i + 2) == Some(&b'\r')
                    && b.get(i + 3) == Some(&b'\n') =>
            {
                return Some((i, 4))
            }
            b'\n' if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') => {
                return Some((i, 3))
            }
            _ => {}
        }
        i += 1;
    }
    None
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
        let mut out: Vec<Event> = chunks.iter().flat_map(|c| d.push(c)).collect();
        out.extend(d.finish());
        out
    }

    #[test]
    fn spec_16_1_case_14_multiline_and_partial() {
        let ev = all(&[b"data: {\"type\":\ndata: \"ping\"}\n\n"]);
        assert_eq!(ev[0].data, "{\"type\":\n\"ping\"}");
        let mut d = Decoder::new();
        assert!(d.push(b"data: {\"type\":\"part").is_empty());
        let ev = d.push(b"ial\"}\n\n");
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
}
