//! A response body made of buffers sent one after another, none of them copied.
//!
//! A batch response is mostly cached item bodies. Copying them into one buffer per response
//! (about 3 MB for 100 product documents) made every client that sends a batch and then stops
//! reading pin its own copy until the connection closes: a few hundred such clients took a pod's
//! memory from 140 MB to 760 MB. As a chain, a response holds only references to the cached
//! buffers (shared with the cache and with every other response that has them) plus the small
//! framing between them, and hyper writes the buffers with vectored writes as they are.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Buffers sent in order; the `Content-Length` is their total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    parts: VecDeque<Bytes>,
    len: u64,
}

impl Chain {
    /// An empty chain with room for `parts` buffers.
    pub fn with_capacity(parts: usize) -> Self {
        Self {
            parts: VecDeque::with_capacity(parts),
            len: 0,
        }
    }

    /// Appends `part` (a reference, not a copy). Empty buffers are left out.
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len() as u64;
            self.parts.push_back(part);
        }
    }

    /// Bytes left to send.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buffers left to send.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// The whole body in one buffer: a copy, for tests and benchmarks that compare bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out.freeze()
    }
}

impl Body for Chain {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let part = self.parts.pop_front();
        if let Some(p) = &part {
            self.len -= p.len() as u64;
        }
        Poll::Ready(part.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_chain_sends_its_parts_in_order_with_the_exact_length() {
        let a = Bytes::from_static(b"hello ");
        let mut chain = Chain::with_capacity(3);
        chain.push(a.clone());
        chain.push(Bytes::new());
        chain.push(Bytes::from_static(b"world"));
        assert_eq!((chain.len(), chain.parts()), (11, 2));
        assert_eq!(chain.size_hint().exact(), Some(11));
        assert_eq!(&chain.to_bytes()[..], b"hello world");
        let collected = chain.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"hello world");
        assert!(Chain::default().is_end_stream());
    }

    #[tokio::test]
    async fn parts_are_the_pushed_buffers_not_copies() {
        let cached = Bytes::from(vec![7u8; 4096]);
        let mut chain = Chain::default();
        chain.push(cached.clone());
        let frame = chain
            .frame()
            .await
            .expect("a frame")
            .expect("infallible")
            .into_data()
            .expect("data");
        assert_eq!(frame.as_ptr(), cached.as_ptr());
    }
}
