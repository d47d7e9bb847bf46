//! An incremental reader of server-sent events: bytes in, whole events (`event:` name and
//! joined `data:` lines) out, however the bytes were cut into chunks.

use std::borrow::Cow;

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
    /// Takes a chunk; returns the events it completed (tests read events whole).
    #[cfg(test)]
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed_with(chunk, |name, data| {
            events.push(SseEvent {
                name: name.to_owned(),
                data: data.to_owned(),
            });
        });
        events
    }

    /// Takes a chunk and hands each event it completed to `f` (name, data) without
    /// copying it when its data is one line.
    pub fn feed_with(&mut self, chunk: &[u8], mut f: impl FnMut(&str, &str)) {
        self.pending.extend_from_slice(chunk);
        while let Some((len, separator)) = event_end(&self.pending) {
            let raw = self.pending.split_to(len);
            let _ = self.pending.split_to(separator);
            if let Ok(text) = std::str::from_utf8(&raw) {
                parse(text, &mut f);
            }
        }
        if self.pending.len() > MAX_EVENT {
            self.pending.clear();
        }
    }
}

/// Where the first event ends: (its length, the separator's length) — a blank line, `\n\n`
/// or `\r\n\r\n`. One pass that stops at the first end found, so a chunk of many events
/// is not searched again for each.
pub(crate) fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in memchr::memchr_iter(b'\n', buf) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, 2)),
            Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => {
                return Some((i - 1, 4));
            }
            _ => {}
        }
    }
    None
}

fn parse(text: &str, f: &mut impl FnMut(&str, &str)) {
    let mut name = "";
    let mut data: Cow<'_, str> = Cow::Borrowed("");
    let mut lines = 0;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            data = match lines {
                0 => Cow::Borrowed(value),
                _ => Cow::Owned(format!("{data}\n{value}")),
            };
            lines += 1;
        }
    }
    if lines > 0 || !name.is_empty() {
        f(name, &data);
    }
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
