//! One frame of the protocol: request id, kind, payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request = 0,
    Response = 1,
    Error = 2,
}

/// A decoded frame body (the length prefix is the codec's business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) payload: Bytes,
}

/// Bytes of header before the payload: id and kind.
pub(crate) const HEADER_LEN: usize = 9;

impl Frame {
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        buf.put_u64(self.id);
        buf.put_u8(self.kind as u8);
        buf.extend_from_slice(&self.payload);
        buf.freeze()
    }

    /// Appends the frame to `out` with its length prefix; `None` (nothing appended) when
    /// the body's length does not fit the `u32` prefix.
    pub(crate) fn encode_into(&self, out: &mut BytesMut) -> Option<()> {
        let len = u32::try_from(HEADER_LEN.checked_add(self.payload.len())?).ok()?;
        out.reserve(4 + len as usize);
        out.put_u32(len);
        out.put_u64(self.id);
        out.put_u8(self.kind as u8);
        out.extend_from_slice(&self.payload);
        Some(())
    }

    /// Decodes a frame body; `None` when it is too short or of an unknown kind.
    pub(crate) fn decode(mut body: Bytes) -> Option<Frame> {
        if body.len() < HEADER_LEN {
            return None;
        }
        let id = body.get_u64();
        let kind = match body.get_u8() {
            0 => Kind::Request,
            1 => Kind::Response,
            2 => Kind::Error,
            _ => return None,
        };
        Some(Frame {
            id,
            kind,
            payload: body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_round_trips() {
        let f = Frame {
            id: 42,
            kind: Kind::Error,
            payload: Bytes::from_static(b"boom"),
        };
        assert_eq!(Frame::decode(f.encode()), Some(f.clone()));
        let mut out = BytesMut::new();
        f.encode_into(&mut out).unwrap();
        assert_eq!(&out[..4], &(f.encode().len() as u32).to_be_bytes());
        assert_eq!(&out[4..], &f.encode()[..]);
    }

    #[test]
    fn short_or_unknown_frames_are_rejected() {
        assert_eq!(Frame::decode(Bytes::from_static(&[0u8; 8])), None);
        let mut body = [0u8; 9];
        body[8] = 7;
        assert_eq!(Frame::decode(Bytes::copy_from_slice(&body)), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(f) = Frame::decode(Bytes::copy_from_slice(&bytes)) {
                prop_assert_eq!(&f.encode()[..], &bytes[..]);
            }
        }
    }
}
