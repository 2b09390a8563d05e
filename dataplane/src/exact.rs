//! Byte buffers sized exactly to their contents, for bytes that live as long as a cache entry.
//!
//! `Bytes::from(Vec<u8>)` keeps the vector's whole allocation, and a body rendered or
//! compressed into a growing `Vec` has up to twice its length allocated. `Vec::shrink_to_fit`
//! does not give that back under the allocator `prapi` runs with: mimalloc keeps a block where
//! it is when a reallocation shrinks it to no less than half its size, so the spare room would
//! stay allocated, and unweighed by the cache's byte budget, for the entry's whole life. A copy
//! into an allocation of the exact length does give it back; it is paid once per load, never
//! per request.

use bytes::Bytes;

/// `buf`'s bytes in an allocation of exactly their length (moved when it already is one).
pub fn bytes(buf: impl Into<Vec<u8>>) -> Bytes {
    let buf = buf.into();
    if buf.len() == buf.capacity() {
        Bytes::from(buf)
    } else {
        Bytes::copy_from_slice(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation behind `b`, as a Vec gives it back (the same buffer when `b` is its only
    /// owner, so the capacity is what the buffer holds).
    fn capacity(b: Bytes) -> usize {
        Vec::from(b).capacity()
    }

    #[test]
    fn contents_are_kept_in_an_allocation_of_their_length() {
        for (len, spare) in [
            (0, 0),
            (0, 64),
            (5, 0),
            (5, 4),
            (1000, 999),
            (30_000, 30_000),
        ] {
            let mut buf = Vec::with_capacity(len + spare);
            buf.extend((0..len).map(|i| (i % 251) as u8));
            let expected = buf.clone();
            let exact = bytes(buf);
            assert_eq!(exact, expected, "len {len}, spare {spare}");
            assert_eq!(capacity(exact), len, "len {len}, spare {spare}");
        }
    }

    #[test]
    fn a_slice_of_a_larger_buffer_does_not_keep_the_buffer() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let part = big.slice(1_000..31_000);
        drop(big);
        let exact = bytes(part);
        assert_eq!(exact.len(), 30_000);
        assert_eq!(capacity(exact), 30_000);
        let shared = Bytes::from_static(b"static, never owned");
        assert_eq!(bytes(shared.clone()), shared);
    }
}
