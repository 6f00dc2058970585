//! Reading a client's frames: the bytes of an upgraded connection turned into whole messages
//! within `--max-frame-bytes`, holding at most one frame (or one fragmented message) and one
//! read of the connection.
//!
//! Why not actix-web-actors' reader (`WsStream`): it moves every chunk the connection has
//! into its buffer before it decodes, and actix-http's `Parser` compares a frame's length
//! with the limit only once the whole frame is there. A frame whose header announced 1 GiB
//! was therefore read, and held, whole before it was refused; one announcing 2^63 - 1 bytes
//! and then stalling was held until the heartbeat. Here a frame is refused as soon as its
//! header is complete, without reading its payload: a data frame larger than what is left of
//! the limit (the whole limit, or what the fragments so far left of it), or a control frame
//! over 125 bytes. The connection is read only while the buffer holds no complete frame.
//!
//! Fragments are reassembled here, so the session only sees whole messages; text is checked
//! for UTF-8 here, so a bad message is the same error (1007) whole or in fragments.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::ws::{CloseReason, OpCode, Parser, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

/// A whole message from the client.
#[derive(Debug)]
pub enum Inbound {
    Text(ByteString),
    /// A binary message; roomcast does not read its bytes.
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why reading stopped. Each ends the stream.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// A frame, or a fragmented message with it, announced more than the limit.
    #[error("a message of {announced} bytes was announced; the limit is {limit}")]
    TooBig { announced: u64, limit: usize },
    /// A text message (whole or reassembled) that is not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// Framing the protocol forbids: unmasked, reserved bits or opcodes, bad fragments, a
    /// long control frame, a bad close payload.
    #[error("{0}")]
    Protocol(ProtocolError),
    /// The connection failed or ended in the middle of a frame.
    #[error("the connection failed: {0}")]
    Lost(PayloadError),
}

/// The largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The whole messages of a connection's byte stream `S`.
pub struct Frames<S> {
    payload: S,
    /// Bytes read and not yet decoded: at most one frame and one read. Released whenever it
    /// is empty and the connection has nothing more.
    buf: BytesMut,
    limit: usize,
    /// A fragmented message being reassembled: whether it is text, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
    /// The connection's bytes ended.
    eof: bool,
    /// An error or the end was returned: nothing more comes.
    done: bool,
}

impl<S> Frames<S> {
    pub fn new(payload: S, limit: usize) -> Self {
        Frames {
            payload,
            buf: BytesMut::new(),
            limit,
            partial: None,
            eof: false,
            done: false,
        }
    }

    /// The next whole message in `buf`, if it holds one.
    fn decode(&mut self) -> Result<Option<Inbound>, InboundError> {
        loop {
            if let Some((opcode, len)) = peek_header(&self.buf) {
                self.check_announced(opcode, len)?;
            }
            let parsed = Parser::parse(&mut self.buf, true, self.limit).map_err(|e| match e {
                ProtocolError::Overflow => InboundError::TooBig {
                    announced: u64::MAX,
                    limit: self.limit,
                },
                e => InboundError::Protocol(e),
            })?;
            let Some((fin, opcode, payload)) = parsed else {
                return Ok(None);
            };
            let payload = payload.map(BytesMut::freeze).unwrap_or_default();
            if let Some(message) = self.assemble(fin, opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Refuses a frame by what its header announces, before its payload is read.
    fn check_announced(&self, opcode: u8, len: u64) -> Result<(), InboundError> {
        if opcode & 0x08 != 0 {
            // A control frame.
            return match len > MAX_CONTROL_PAYLOAD {
                true => Err(InboundError::Protocol(ProtocolError::InvalidLength(
                    usize::try_from(len).unwrap_or(usize::MAX),
                ))),
                false => Ok(()),
            };
        }
        let so_far = match (opcode, &self.partial) {
            // A continuation adds to the message being reassembled.
            (0, Some((_, buf))) => buf.len() as u64,
            _ => 0,
        };
        let announced = so_far.saturating_add(len);
        if announced > self.limit as u64 {
            return Err(InboundError::TooBig {
                announced,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Adds one frame to the message; returns the message once it is whole.
    fn assemble(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: Bytes,
    ) -> Result<Option<Inbound>, InboundError> {
        let protocol = |e| Err(InboundError::Protocol(e));
        match opcode {
            OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                protocol(ProtocolError::ContinuationStarted)
            }
            OpCode::Text | OpCode::Binary if !fin => {
                self.partial = Some((opcode == OpCode::Text, BytesMut::from(&payload[..])));
                Ok(None)
            }
            OpCode::Text => text(payload).map(Some),
            OpCode::Binary => Ok(Some(Inbound::Binary)),
            OpCode::Continue => {
                let Some((_, buf)) = self.partial.as_mut() else {
                    return protocol(ProtocolError::ContinuationNotStarted);
                };
                buf.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                match self.partial.take() {
                    Some((true, buf)) => text(buf.freeze()).map(Some),
                    _ => Ok(Some(Inbound::Binary)),
                }
            }
            // Control frames may come between fragments, but are never fragmented.
            _ if !fin => protocol(ProtocolError::ContinuationFragment(opcode)),
            OpCode::Ping => Ok(Some(Inbound::Ping(payload))),
            OpCode::Pong => Ok(Some(Inbound::Pong)),
            OpCode::Close => match Parser::try_parse_close_payload(&payload) {
                Ok(reason) => Ok(Some(Inbound::Close(reason))),
                Err(e) => protocol(e),
            },
            OpCode::Bad => protocol(ProtocolError::BadOpCode),
        }
    }
}

fn text(bytes: Bytes) -> Result<Inbound, InboundError> {
    ByteString::try_from(bytes)
        .map(Inbound::Text)
        .map_err(|_| InboundError::InvalidUtf8)
}

/// The opcode and payload length a frame header announces, once the header has them.
fn peek_header(buf: &[u8]) -> Option<(u8, u64)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    let len = match second & 0x7F {
        126 => u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
        127 => u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?),
        n => u64::from(n),
    };
    Some((first & 0x0F, len))
}

impl<S> Stream for Frames<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Inbound, InboundError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.done {
            match this.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) if this.eof => this.done = true,
                Ok(None) => match Pin::new(&mut this.payload).poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                    Poll::Ready(Some(Err(e))) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(InboundError::Lost(e))));
                    }
                    Poll::Ready(None) => this.eof = true,
                    Poll::Pending => {
                        // Nothing left to decode: the buffer gives its memory back while the
                        // connection is quiet (an idle socket holds none).
                        if this.buf.is_empty() {
                            this.buf = BytesMut::new();
                        }
                        return Poll::Pending;
                    }
                },
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    /// A client frame: masked, as clients must send.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let op = OpCode::from(opcode);
        Parser::write_message(&mut out, payload, op, fin, true);
        out.to_vec()
    }

    /// A header alone, announcing `len` bytes (with the 64-bit length form), masked.
    fn header(opcode: u8, len: u64) -> Vec<u8> {
        let mut out = vec![0x80 | opcode, 0x80 | 127];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    /// Reads `chunks` as a connection would deliver them; the stream stays open after them
    /// (pending), as a stalled client's would.
    fn read_all(chunks: Vec<Vec<u8>>, limit: usize) -> Vec<Result<Inbound, InboundError>> {
        let chunks = chunks
            .into_iter()
            .map(|c| Ok::<_, PayloadError>(Bytes::from(c)));
        let payload = futures_util::stream::iter(chunks).chain(futures_util::stream::pending());
        let mut frames = Frames::new(Box::pin(payload), limit);
        let mut out = Vec::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(item)) = Pin::new(&mut frames).poll_next(&mut cx) {
            out.push(item);
        }
        out
    }

    fn texts(items: &[Result<Inbound, InboundError>]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(Inbound::Text(t)) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn whole_and_fragmented_messages_come_out_whole() {
        let items = read_all(
            vec![
                frame(true, 1, b"one"),
                frame(false, 1, b"tw"),
                frame(true, 9, b"ping"),
                frame(true, 0, b"o"),
            ],
            100,
        );
        assert_eq!(texts(&items), ["one", "two"]);
        assert!(matches!(items[1], Ok(Inbound::Ping(ref p)) if &p[..] == b"ping"));
    }

    #[test]
    fn frames_split_across_reads_are_joined() {
        let bytes = [frame(true, 1, b"hello"), frame(true, 1, b"world")].concat();
        let chunks = bytes.chunks(3).map(<[u8]>::to_vec).collect();
        assert_eq!(texts(&read_all(chunks, 100)), ["hello", "world"]);
    }

    #[test]
    fn a_header_announcing_too_much_is_refused_before_its_payload() {
        for len in [1 << 30, (1 << 63) - 1, 1 << 63, u64::MAX] {
            // Nothing but the header has arrived: refused now, not when the payload would be
            // complete.
            let items = read_all(vec![header(1, len)], 1024);
            assert!(
                matches!(items[..], [Err(InboundError::TooBig { .. })]),
                "{len}: {items:?}"
            );
        }
        // The limit itself is allowed.
        let items = read_all(vec![frame(true, 2, &[0; 1024])], 1024);
        assert!(matches!(items[..], [Ok(Inbound::Binary)]), "{items:?}");
    }

    #[test]
    fn fragments_are_refused_as_soon_as_they_would_pass_the_limit() {
        let items = read_all(
            vec![
                frame(false, 1, &[b'a'; 600]),
                frame(false, 0, &[b'a'; 400]),
                // 1000 so far; this one announces 100 more, over 1024, with no payload sent.
                header(0, 100),
            ],
            1024,
        );
        assert!(
            matches!(
                items[..],
                [Err(InboundError::TooBig {
                    announced: 1100,
                    ..
                })]
            ),
            "{items:?}"
        );
    }

    #[test]
    fn invalid_utf8_is_the_same_error_whole_or_fragmented() {
        let bad = [b'{', 0xff, 0xfe, b'}'];
        let whole = read_all(vec![frame(true, 1, &bad)], 100);
        let parts = read_all(
            vec![frame(false, 1, &bad[..2]), frame(true, 0, &bad[2..])],
            100,
        );
        for items in [whole, parts] {
            assert!(
                matches!(items[..], [Err(InboundError::InvalidUtf8)]),
                "{items:?}"
            );
        }
    }

    #[test]
    fn protocol_violations_are_protocol_errors() {
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        let long_ping = header(9, 126);
        let unstarted = frame(true, 0, b"x");
        let fragmented_ping = frame(false, 9, b"x");
        let restarted = [frame(false, 1, b"a"), frame(false, 1, b"b")].concat();
        for bytes in [unmasked, long_ping, unstarted, fragmented_ping, restarted] {
            let items = read_all(vec![bytes.clone()], 100);
            assert!(
                matches!(items[..], [Err(InboundError::Protocol(_))]),
                "{bytes:?}: {items:?}"
            );
        }
    }

    #[test]
    fn the_end_of_the_connection_ends_the_stream() {
        let payload = futures_util::stream::iter(vec![Ok::<_, PayloadError>(Bytes::from(frame(
            true, 1, b"last",
        )))]);
        let mut frames = Frames::new(payload, 100);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut next = || Pin::new(&mut frames).poll_next(&mut cx);
        assert!(matches!(next(), Poll::Ready(Some(Ok(Inbound::Text(t)))) if t == "last"));
        assert!(matches!(next(), Poll::Ready(None)));
        assert!(matches!(next(), Poll::Ready(None)));
    }
}
