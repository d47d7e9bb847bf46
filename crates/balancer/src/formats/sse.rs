//! An incremental reader of server-sent events: bytes in, whole events (`event:` name and
//! joined `data:` lines) out, however the bytes were cut into chunks.

use bytes::BytesMut;

/// Longest event kept while waiting for its end; a longer one is dropped whole.
const MAX_EVENT: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub struct SseReader {
    pending: BytesMut,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

impl SseReader {
    /// Takes a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let raw = self.pending.split_to(end.0);
            let _ = self.pending.split_to(end.1);
            if let Some(event) = parse(&raw) {
                events.push(event);
            }
        }
        if self.pending.len() > MAX_EVENT {
            self.pending.clear();
        }
        events
    }
}

/// Where the first event ends: (its length, the separator's length).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| (i, 2));
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse(raw: &[u8]) -> Option<SseEvent> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut name = String::new();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            value.trim().clone_into(&mut name);
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (!data.is_empty() || !name.is_empty()).then_some(SseEvent { name, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_however_the_bytes_are_cut() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\nevent: ping\r\ndata: {}\r\n\r\ndata: x\ndata: y\n\n: comment\n\n";
        for cut in 1..stream.len() {
            let mut reader = SseReader::default();
            let mut events = reader.feed(&stream[..cut]);
            events.extend(reader.feed(&stream[cut..]));
            assert_eq!(
                events,
                [
                    SseEvent {
                        name: "message_start".into(),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        name: "ping".into(),
                        data: "{}".into()
                    },
                    SseEvent {
                        name: String::new(),
                        data: "x\ny".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }
}
