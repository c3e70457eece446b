//! Fuzzes the gRPC message decoder (`h2chat::grpc::codec`) for equivalence, not just "no panic".
//!
//! Every input drives two passes, both feeding the decoder in chunks whose lengths come from the
//! input (so message boundaries land anywhere, including inside a prefix, and empty pushes happen):
//!
//! 1. **Arbitrary bytes** under a small limit. The decoder must not panic, must agree with a
//!    whole-buffer reference decoder (same frames, same error or truncation), must keep returning
//!    its first error, and its byte accounting must add up at every step.
//! 2. **Round trip**: arbitrary messages, encoded with `encode_frame`, must decode to exactly those
//!    messages under any limit at least as large as the largest payload; under a smaller limit the
//!    first oversize message must be refused with `TooLarge` and every message before it delivered.

#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use codec::{encode_frame, DecodeError, Decoder, Frame, PREFIX_BYTES};

// The decoder's own file, compiled here by itself (it needs only `bytes`): the target builds in
// seconds instead of building the whole server and its dependencies again with coverage flags.
#[path = "../../src/grpc/codec.rs"]
#[allow(dead_code)]
mod codec;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// The limit for the raw pass: small, so `TooLarge` is easy to reach. In the round trip it is
    /// the slack above (or, modulo the largest payload, the value below) the largest payload.
    limit: u8,
    /// How the byte stream is cut into pushes; whatever is left after the last cut is one push.
    cuts: Vec<Cut>,
    /// Messages for the round trip.
    messages: Vec<Message>,
    /// Bytes for the raw pass.
    raw: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Cut {
    /// Length of this push (0 is a valid, empty push).
    len: u8,
    /// Drain `next_frame` after this push; otherwise push again first, so frames pile up.
    drain: bool,
}

#[derive(Arbitrary, Debug)]
struct Message {
    compressed: bool,
    payload: Vec<u8>,
}

/// What a decoder made of a whole byte stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    /// The sticky error from `next_frame`, else what `finish` said.
    end: Result<(), DecodeError>,
}

fuzz_target!(|input: Input| {
    raw_bytes(&input);
    round_trip(&input);
});

/// Pass 1: arbitrary bytes, small limit, checked against the reference decoder.
fn raw_bytes(input: &Input) {
    let max = usize::from(input.limit);
    let got = feed(&input.raw, max, &input.cuts);
    assert_eq!(
        got,
        reference(&input.raw, max),
        "split decoding disagrees with whole-buffer decoding"
    );
}

/// Pass 2: encode messages, decode them back under a limit that fits and one that does not.
fn round_trip(input: &Input) {
    let mut wire = BytesMut::new();
    for m in &input.messages {
        encode_frame(m.compressed, &m.payload, &mut wire);
    }
    let framed_len: usize = input
        .messages
        .iter()
        .map(|m| PREFIX_BYTES + m.payload.len())
        .sum();
    assert_eq!(
        wire.len(),
        framed_len,
        "encode_frame wrote a prefix of the wrong size"
    );

    let expected: Vec<Frame> = input
        .messages
        .iter()
        .map(|m| Frame {
            compressed: m.compressed,
            payload: Bytes::copy_from_slice(&m.payload),
        })
        .collect();
    let largest = input
        .messages
        .iter()
        .map(|m| m.payload.len())
        .max()
        .unwrap_or(0);

    // Any limit at least as large as the largest payload (the largest itself when `limit` is 0).
    let fits = largest + usize::from(input.limit);
    let got = feed(&wire, fits, &input.cuts);
    assert_eq!(
        got,
        Outcome {
            frames: expected.clone(),
            end: Ok(())
        },
        "round trip under limit {fits}"
    );

    // A limit below the largest payload: the first message over it is refused, earlier ones arrive.
    if largest > 0 {
        let tight = usize::from(input.limit) % largest;
        let first_over = input
            .messages
            .iter()
            .position(|m| m.payload.len() > tight)
            .expect("the largest payload exceeds the tight limit");
        let got = feed(&wire, tight, &input.cuts);
        let want = Outcome {
            frames: expected[..first_over].to_vec(),
            end: Err(DecodeError::TooLarge {
                len: input.messages[first_over].payload.len(),
                max: tight,
            }),
        };
        assert_eq!(got, want, "round trip under tight limit {tight}");
    }
}

/// Feeds `bytes` to a fresh decoder in the pushes `cuts` describe, checking the decoder's promises
/// after every call, and returns what it decoded.
fn feed(bytes: &[u8], max: usize, cuts: &[Cut]) -> Outcome {
    let mut run = Run {
        decoder: Decoder::new(max),
        max,
        pushed: 0,
        consumed: 0,
        frames: vec![],
        failed: None,
    };
    let mut rest = bytes;
    for cut in cuts {
        let (chunk, tail) = rest.split_at(usize::from(cut.len).min(rest.len()));
        run.push(chunk);
        rest = tail;
        if cut.drain {
            run.drain();
        }
    }
    run.push(rest);
    run.drain();

    let end = match run.failed.clone() {
        Some(err) => {
            assert_eq!(
                run.decoder.finish(),
                Err(err.clone()),
                "finish forgot the error"
            );
            Err(err)
        }
        None => {
            let end = run.decoder.finish();
            let unreturned = run.pushed - run.consumed;
            match &end {
                Ok(()) => assert_eq!(
                    unreturned, 0,
                    "finish is Ok with {unreturned} bytes unreturned"
                ),
                Err(DecodeError::Truncated { buffered }) => {
                    assert!(*buffered > 0, "truncated with nothing buffered");
                    assert_eq!(
                        *buffered, unreturned,
                        "Truncated miscounts the unreturned bytes"
                    );
                }
                Err(other) => panic!("finish invented an error: {other:?}"),
            }
            end
        }
    };
    Outcome {
        frames: run.frames,
        end,
    }
}

/// One decoder under test plus the bookkeeping to check it against.
struct Run {
    decoder: Decoder,
    max: usize,
    /// Bytes handed to `push`.
    pushed: usize,
    /// Bytes returned as frames, prefixes included.
    consumed: usize,
    frames: Vec<Frame>,
    /// The first error `next_frame` returned.
    failed: Option<DecodeError>,
}

impl Run {
    fn push(&mut self, chunk: &[u8]) {
        self.decoder.push(chunk);
        self.pushed += chunk.len();
        if let Some(err) = &self.failed {
            // New bytes must not revive a failed decoder.
            assert_eq!(
                self.decoder.next_frame().as_ref(),
                Err(err),
                "error not sticky across push"
            );
        }
    }

    /// Calls `next_frame` until it wants more bytes or fails.
    fn drain(&mut self) {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(self.failed.is_none(), "a frame after an error");
                    assert!(frame.payload.len() <= self.max, "a frame over the limit");
                    self.consumed += PREFIX_BYTES + frame.payload.len();
                    self.frames.push(frame);
                    self.check_accounting(false);
                }
                Ok(None) => {
                    assert!(self.failed.is_none(), "Ok(None) after an error");
                    self.check_accounting(true);
                    return;
                }
                Err(err) => {
                    assert!(
                        !matches!(err, DecodeError::Truncated { .. }),
                        "next_frame said Truncated"
                    );
                    match &self.failed {
                        Some(first) => assert_eq!(&err, first, "the error changed"),
                        None => self.failed = Some(err.clone()),
                    }
                    assert_eq!(self.decoder.next_frame(), Err(err), "error not sticky");
                    return;
                }
            }
        }
    }

    /// Every pushed byte is either returned in a frame, buffered, or part of the prefix of the
    /// message being read (which the decoder has consumed but not yet returned).
    fn check_accounting(&self, wants_more: bool) {
        let buffered = self.decoder.buffered();
        let unreturned = self.pushed - self.consumed;
        assert!(
            buffered <= unreturned,
            "buffered {buffered} > unreturned {unreturned}"
        );
        let in_prefix = unreturned - buffered;
        assert!(
            in_prefix == 0 || in_prefix == PREFIX_BYTES,
            "{in_prefix} bytes vanished"
        );
        if wants_more {
            // Asking for more bytes means no complete prefix, or a body of at most `max` bytes
            // still short: the memory bound the decoder's docs promise.
            if in_prefix == 0 {
                assert!(
                    buffered < PREFIX_BYTES,
                    "a whole prefix buffered but more bytes wanted"
                );
            } else {
                assert!(
                    buffered < self.max,
                    "body of {buffered} bytes buffered under limit {}",
                    self.max
                );
            }
        }
    }
}

/// The framing rules applied to the whole stream at once: the oracle for split decoding. A prefix's
/// flag is checked before its length, as the decoder does.
fn reference(bytes: &[u8], max: usize) -> Outcome {
    let mut frames = vec![];
    let mut rest = bytes;
    let end = loop {
        if rest.is_empty() {
            break Ok(());
        }
        if rest.len() < PREFIX_BYTES {
            break Err(DecodeError::Truncated {
                buffered: rest.len(),
            });
        }
        let compressed = match rest[0] {
            0 => false,
            1 => true,
            flag => break Err(DecodeError::BadFlag(flag)),
        };
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len > max {
            break Err(DecodeError::TooLarge { len, max });
        }
        if rest.len() < PREFIX_BYTES + len {
            break Err(DecodeError::Truncated {
                buffered: rest.len(),
            });
        }
        frames.push(Frame {
            compressed,
            payload: Bytes::copy_from_slice(&rest[PREFIX_BYTES..PREFIX_BYTES + len]),
        });
        rest = &rest[PREFIX_BYTES + len..];
    };
    Outcome { frames, end }
}
