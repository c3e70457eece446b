//! The raw test client's own reading of the spec (message prefix, `grpc-message` escapes),
//! checked on examples written out here, so that the protocol tests stand on solid ground.

use bytes::BytesMut;

use crate::support::wire::{frame, percent_decode, take_frame};

#[test]
fn percent_decoding_follows_the_spec_and_keeps_bad_escapes() {
    assert_eq!(percent_decode(b"a%20b%25c"), "a b%c");
    assert_eq!(percent_decode(b"%E2%82%AC"), "€");
    assert_eq!(percent_decode(b"100%"), "100%");
    assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
}

#[test]
fn frames_split_at_their_prefix() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&frame(true, b"abc"));
    buf.extend_from_slice(&[0, 0, 0, 0]);
    let f = take_frame(&mut buf).expect("a frame");
    assert!(f.compressed);
    assert_eq!(&f.payload[..], b"abc");
    assert!(take_frame(&mut buf).is_none(), "4 bytes are no prefix");
    buf.extend_from_slice(&[0]);
    assert_eq!(take_frame(&mut buf).map(|f| f.payload.len()), Some(0));
}
