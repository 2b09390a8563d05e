//! Gzip bodies that can be joined into one gzip member without compressing anything again.
//!
//! A batch response is made of cached item bodies. Each was compressed once, when it was cached;
//! compressing the batch again per request would cost far more than the rest of the batch. The
//! old answer was to concatenate the items' gzip members: valid RFC 1952 (a gzip file is a series
//! of members), but many clients read only the first member (OkHttp fails with "gzip finished
//! without exhausting source"; curl and single-stream zlib readers print only `{"items":[`).
//! This module makes the joined body **one** member instead, still without recompressing.
//!
//! # How
//!
//! A gzip member is a header, a deflate stream (RFC 1951) and a trailer holding the CRC-32 and
//! the length (mod 2^32) of the uncompressed data. A deflate stream is a series of blocks, the
//! last one flagged final, packed bit by bit. Two streams can be spliced by bytes only where a
//! block ends on a byte boundary and is not final. So every cached member is made like this
//! ([`member`]):
//!
//! ```text
//! [header with the "joinable" mark] [deflate blocks, none final, ending with a sync flush]
//! [03 00: an empty final block] [CRC-32] [length]
//! ```
//!
//! The sync flush (zlib's `Z_SYNC_FLUSH`) writes out everything pending and pads to a byte
//! boundary, normally with an empty stored block (`00 00 ff ff` on the wire; miniz leaves it out
//! when the last block is a stored one, which ends on a byte boundary anyway). `03 00` is an empty
//! final block with fixed codes, starting on that boundary. Such a member is a normal gzip member that every decoder
//! reads, so single GETs serve it as it is. A [`Part`] is the view of one: its deflate blocks
//! without the final block, its CRC-32 and its length.
//!
//! Joining ([`Joiner`]) writes one plain header, then for each piece either a part's deflate
//! blocks as they are or literal bytes (the batch's JSON framing) as stored blocks, then one empty
//! final block, the CRC-32 of the whole (built from the parts' CRCs by zlib's `crc32_combine`
//! with byte tables, O(log length) lookups per part and no pass over the data; tested against
//! `crc32fast`'s `combine`, which is several times slower per part) and the total length. A part's blocks never refer back to data before them (each part was compressed by its
//! own fresh compressor), so they decode the same after any other blocks.
//!
//! # The mark
//!
//! Only members known to have this layout may be spliced: a member with a final block in the
//! middle of its data, or one that does not end on a byte boundary, would corrupt the joined
//! body. The layout cannot be recognised reliably from the bytes alone, so [`member`] marks it in
//! the header, with an extra field (RFC 1952 §2.3.1.1, `FLG.FEXTRA`) holding one empty subfield
//! with the id `PJ`. Decoders skip extra fields. A member without the mark (a products pod of an
//! older version during a rollout, say) is decompressed and compressed again by [`rejoinable`]:
//! correct, only slower.
//!
//! Cost per cached body against a member written by `GzEncoder::finish`: 6 bytes of extra field,
//! 4–5 bytes of sync flush and 2 of final block, minus the final bit the last data block no
//! longer carries. docs/api.md ("Batches") has the figures `benches/gzip.rs` measures.

use std::io::Read as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::http::chain::Chain;
use flate2::read::MultiGzDecoder;
use flate2::{Compress, Compression, FlushCompress};

/// Gzip header of a joinable member: magic, CM = deflate, `FLG.FEXTRA`, no time stamp, XFL 0,
/// OS unknown (255), then `XLEN` = 4 and the subfield `P` `J` with no data (`LEN` = 0).
pub const MARKED_HEADER: [u8; 16] = [
    0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 255, 4, 0, b'P', b'J', 0, 0,
];

/// Gzip header of a joined body: as [`MARKED_HEADER`] without the extra field (a joined body is
/// not joined again, so the mark would only cost bytes).
const PLAIN_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// An empty final deflate block with fixed Huffman codes (BFINAL = 1, BTYPE = 01, then the 7-bit
/// end-of-block code), starting on a byte boundary.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// CRC-32 and length.
const TRAILER_LEN: usize = 8;

/// Longest stored block (its LEN field is 16 bits).
const MAX_STORED: usize = 0xffff;

/// `body` as one joinable gzip member (see the module docs) at `level`.
pub fn member(body: &[u8], level: Compression) -> Bytes {
    // JSON compresses well; a quarter of the input is a fair first guess that avoids most regrowth.
    let mut out = Vec::with_capacity(MARKED_HEADER.len() + body.len() / 4 + 64);
    out.extend_from_slice(&MARKED_HEADER);
    deflate_sync(body, level, &mut out);
    out.extend_from_slice(&FINAL_BLOCK);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(&isize_field(body.len() as u64));
    // The member lives as long as its cache entry: without the spare room the compressor's
    // buffer needed.
    crate::exact::bytes(out)
}

/// RFC 1952's ISIZE: the length modulo 2^32, little-endian.
fn isize_field(len: u64) -> [u8; 4] {
    // The truncation is the definition of the field.
    (len as u32).to_le_bytes()
}

/// Appends `input` compressed as raw deflate blocks, none of them final, ending on a byte
/// boundary (sync flush).
///
/// The calls follow how miniz (flate2's default backend) works, not only zlib's documented rule:
/// a call that finds output still pending from an earlier call only hands that out and ignores
/// its flush request, and a `Sync` call that fills the output buffer before it reaches the flush
/// stops there and forgets the request. So: all input without flushing; then, until a `Sync`
/// call returns with room to spare (it got to the end), hand out what is pending and ask again;
/// then hand out the rest. A repeated `Sync` costs at most an empty block (5 bytes).
fn deflate_sync(input: &[u8], level: Compression, out: &mut Vec<u8>) {
    let start = out.len();
    let mut c = Compress::new(level, false);
    let step = |c: &mut Compress, data: &[u8], flush: FlushCompress, out: &mut Vec<u8>| {
        if out.capacity() - out.len() < 64 {
            out.reserve(64 + data.len() / 4 + out.len() / 8);
        }
        c.compress_vec(data, out, flush).is_ok()
    };
    // Hands out pending output until a call adds nothing.
    let drain = |c: &mut Compress, out: &mut Vec<u8>| loop {
        let before = c.total_out();
        if !step(c, &[], FlushCompress::None, out) {
            return false;
        }
        if c.total_out() == before {
            return true;
        }
    };
    let mut ok = true;
    while ok && c.total_in() < input.len() as u64 {
        // total_in never exceeds the input given, so the conversion and the slice hold.
        let consumed = usize::try_from(c.total_in()).unwrap_or(input.len());
        let rest = input.get(consumed..).unwrap_or_default();
        ok = step(&mut c, rest, FlushCompress::None, out);
    }
    loop {
        ok = ok && drain(&mut c, out);
        if !ok {
            break;
        }
        // Room for what the compressor still holds (at most its window and lookahead), so one
        // call normally gets through.
        out.reserve(1024 + input.len().min(1 << 17) / 8);
        ok = step(&mut c, &[], FlushCompress::Sync, out);
        if !ok || out.len() < out.capacity() {
            break;
        }
    }
    ok = ok && drain(&mut c, out);
    if !ok {
        // A stream error would be a bug of the compressor; stored blocks need none.
        out.truncate(start);
        stored(input, out);
    }
}

/// Appends `data` as stored (uncompressed), non-final deflate blocks. A stored block starts and
/// ends on a byte boundary, so nothing else is needed to splice it. Empty data appends nothing.
fn stored(data: &[u8], out: &mut impl BufMut) {
    for chunk in data.chunks(MAX_STORED) {
        // BFINAL = 0, BTYPE = 00, padded to the byte; LEN and its one's complement NLEN.
        let len = chunk.len() as u16;
        out.put_u8(0);
        out.put_u16_le(len);
        out.put_u16_le(!len);
        out.put_slice(chunk);
    }
}

/// A joinable member seen as a piece of a larger body: its deflate blocks (without the final
/// block), the CRC-32 and the length of its uncompressed data. Cheap: a view of the member's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    deflate: Bytes,
    crc: u32,
    len: u32,
}

impl Part {
    /// The part of a member made by [`member`]; `None` for any other bytes (no mark, truncated,
    /// not ending in the empty final block). The mark is what vouches for the byte-aligned end
    /// of the blocks before that final block: it cannot be seen in the bytes.
    pub fn parse(member: &Bytes) -> Option<Part> {
        let body_end = member.len().checked_sub(TRAILER_LEN)?;
        let deflate_end = body_end.checked_sub(FINAL_BLOCK.len())?;
        if !member.starts_with(&MARKED_HEADER)
            || deflate_end < MARKED_HEADER.len()
            || member[deflate_end..body_end] != FINAL_BLOCK
        {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&member[at..at + 4]);
            u32::from_le_bytes(w)
        };
        Some(Part {
            deflate: member.slice(MARKED_HEADER.len()..deflate_end),
            crc: word(body_end),
            len: word(body_end + 4),
        })
    }

    /// Bytes of deflate data this part adds to a joined body.
    pub fn compressed_len(&self) -> usize {
        self.deflate.len()
    }
}

/// The same data as a joinable member: `gz` itself when it is one, else `gz` decompressed (all
/// members, as any gzip reader would) and compressed again at the fastest level. `None` when `gz`
/// is not valid gzip.
pub fn rejoinable(gz: Bytes) -> Option<Bytes> {
    if Part::parse(&gz).is_some() {
        return Some(gz);
    }
    let mut plain = Vec::with_capacity(gz.len().saturating_mul(4));
    MultiGzDecoder::new(&gz[..]).read_to_end(&mut plain).ok()?;
    Some(member(&plain, Compression::fast()))
}

/// Builds one gzip member out of [`Part`]s and literal bytes, in order, as a [`Chain`]: the
/// parts' deflate data are the cached members' own buffers, and the literals (stored blocks of
/// the JSON framing), header and trailer share one small buffer. See the module docs.
pub struct Joiner {
    out: Chain,
    /// Stored blocks and trailer not yet in `out`: split off (no copy) before each part.
    scratch: BytesMut,
    /// CRC-32 of everything appended so far, and its length.
    crc: u32,
    len: u64,
}

impl Joiner {
    /// A joiner for `parts` parts whose literals take `literal_bytes` ([`Joiner::literal_len`]
    /// of each): sized so that the framing never reallocates.
    pub fn with_capacity(parts: usize, literal_bytes: usize) -> Self {
        let mut scratch =
            BytesMut::with_capacity(PLAIN_HEADER.len() + literal_bytes + FINAL_BLOCK.len() + 8);
        scratch.put_slice(&PLAIN_HEADER);
        Self {
            out: Chain::with_capacity(2 * parts + 2),
            scratch,
            crc: 0,
            len: 0,
        }
    }

    /// Bytes a literal of `len` bytes takes in the output (stored-block headers included).
    pub fn literal_len(len: usize) -> usize {
        len + 5 * len.div_ceil(MAX_STORED)
    }

    /// Appends `data` uncompressed (stored blocks). For the small JSON framing between parts,
    /// where compression would gain a few bytes at the cost of a compressor per request.
    pub fn literal(&mut self, data: &[u8]) {
        stored(data, &mut self.scratch);
        let mut h = crc32fast::Hasher::new_with_initial_len(self.crc, self.len);
        h.update(data);
        self.crc = h.finalize();
        self.len += data.len() as u64;
    }

    /// Appends a part's compressed data as it is (a reference to the member's buffer).
    pub fn part(&mut self, part: &Part) {
        self.out.push(self.scratch.split().freeze());
        self.out.push(part.deflate.clone());
        self.crc = crc32_combine(self.crc, part.crc, u64::from(part.len));
        self.len += u64::from(part.len);
    }

    /// Ends the member: the empty final block, the CRC-32 and the length of everything appended.
    pub fn finish(mut self) -> Chain {
        self.scratch.put_slice(&FINAL_BLOCK);
        self.scratch.put_u32_le(self.crc);
        self.scratch.put_slice(&isize_field(self.len));
        self.out.push(self.scratch.split().freeze());
        self.out
    }
}

/// The CRC-32 polynomial, reflected.
const POLY: u32 = 0xedb8_8320;

/// `a(x) * b(x) mod p(x)` over GF(2), reflected (zlib's `multmodp`, crc32.c).
const fn multiply(a: u32, mut b: u32) -> u32 {
    let mut p = 0u32;
    let mut i = 0;
    while i < 32 {
        p ^= b & ((a >> (31 - i)) & 1).wrapping_neg();
        b = (b >> 1) ^ ((b & 1).wrapping_neg() & POLY);
        i += 1;
    }
    p
}

/// Parts shorter than 2^SHIFT_BITS bytes (16 MiB) combine through the tables; longer ones
/// through crc32fast.
const SHIFT_BITS: usize = 24;

/// `tables[k]`: multiplication by x^(8 * 2^k) mod p(x) (appending 2^k zero bytes to a CRC) as
/// four byte tables, which works because the product is linear in its second factor.
/// crc32fast's `combine` does these multiplications bit by bit (32 steps each, one per set bit
/// of the length); with the tables a 30 KB part costs about 15 x 4 lookups, which keeps joining
/// a 100-item batch close to copying it.
fn shift_tables() -> &'static [[[u32; 256]; 4]; SHIFT_BITS] {
    static TABLES: std::sync::OnceLock<Box<[[[u32; 256]; 4]; SHIFT_BITS]>> =
        std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Box::new([[[0u32; 256]; 4]; SHIFT_BITS]);
        // x^8: appending one zero byte.
        let mut x = 0x0080_0000u32;
        for table in t.iter_mut() {
            for (k, bytes) in table.iter_mut().enumerate() {
                for (v, slot) in (0u32..).zip(bytes.iter_mut()) {
                    *slot = multiply(x, v << (8 * k));
                }
            }
            x = multiply(x, x);
        }
        t
    })
}

/// The CRC-32 of `A || B` from `crc1` = CRC-32(A), `crc2` = CRC-32(B) and `len2` = |B| (zlib's
/// `crc32_combine`): `crc1` carried over `len2` zero bytes, plus `crc2`.
fn crc32_combine(crc1: u32, crc2: u32, len2: u64) -> u32 {
    // An empty B has CRC 0; whatever `crc2` says, nothing is appended (as crc32fast does).
    if len2 == 0 {
        return crc1;
    }
    if len2 >= 1 << SHIFT_BITS {
        let mut h = crc32fast::Hasher::new_with_initial(crc1);
        h.combine(&crc32fast::Hasher::new_with_initial_len(crc2, len2));
        return h.finalize();
    }
    let tables = shift_tables();
    let mut p = crc1;
    let mut rest = len2;
    let mut k = 0;
    while rest != 0 {
        if rest & 1 == 1 {
            let t = &tables[k];
            p = t[0][(p & 0xff) as usize]
                ^ t[1][((p >> 8) & 0xff) as usize]
                ^ t[2][((p >> 16) & 0xff) as usize]
                ^ t[3][(p >> 24) as usize];
        }
        rest >>= 1;
        k += 1;
    }
    p ^ crc2
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read as _;

    use flate2::read::{DeflateDecoder, GzDecoder};
    use proptest::prelude::*;

    use super::*;

    /// Decodes exactly one member and fails if anything follows it.
    pub(crate) fn gunzip_one(data: &[u8]) -> Vec<u8> {
        let mut decoder = GzDecoder::new(data);
        let mut out = Vec::new();
        if let Err(e) = decoder.read_to_end(&mut out) {
            panic!("not a valid gzip member ({e}): {} bytes", data.len());
        }
        let rest = decoder.into_inner();
        assert!(
            rest.is_empty(),
            "{} bytes after the first member",
            rest.len()
        );
        out
    }

    fn json_like(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!(r#"{{"sku":"P1-{i}","size":"{}"}},"#, i % 13))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_member_is_a_normal_gzip_member_and_a_part() {
        for body in [Vec::new(), b"{}".to_vec(), json_like(2000)] {
            let m = member(&body, Compression::default());
            assert_eq!(gunzip_one(&m), body);
            let p = Part::parse(&m).expect("joinable");
            assert_eq!(p.crc, crc32fast::hash(&body));
            assert_eq!(p.len as usize, body.len());
            // The blocks without the final one decode to the body when one is added back.
            let mut raw = p.deflate.to_vec();
            raw.extend_from_slice(&FINAL_BLOCK);
            let mut out = Vec::new();
            DeflateDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("raw deflate");
            assert_eq!(out, body);
        }
    }

    #[test]
    fn parse_refuses_what_is_not_a_marked_member() {
        let body = json_like(50);
        let m = member(&body, Compression::default());
        let mut old = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        std::io::Write::write_all(&mut old, &body).expect("compress");
        let old = Bytes::from(old.finish().expect("compress"));
        assert_eq!(Part::parse(&old), None, "a GzEncoder member has no mark");
        for cut in [0, 1, 15, 16, 20, m.len() - 9, m.len() - 1] {
            assert_eq!(Part::parse(&m.slice(..cut)), None, "cut at {cut}");
        }
        let mut no_final = m.to_vec();
        // The empty final block changed into something else.
        let at = no_final.len() - TRAILER_LEN - 2;
        no_final[at] = 0x01;
        assert_eq!(Part::parse(&Bytes::from(no_final)), None);
        // A foreign member is made joinable by decompressing and compressing again.
        let again = rejoinable(old).expect("valid gzip");
        assert!(Part::parse(&again).is_some());
        assert_eq!(gunzip_one(&again), body);
        assert_eq!(rejoinable(m.clone()), Some(m));
        assert_eq!(rejoinable(Bytes::from_static(b"\x1f\x8bnot gzip")), None);
    }

    #[test]
    fn stored_blocks_split_at_the_limit() {
        let big = vec![b'x'; 2 * MAX_STORED + 7];
        let mut j = Joiner::with_capacity(0, 0);
        j.literal(&big);
        j.literal(b"");
        let out = j.finish();
        assert_eq!(gunzip_one(&out.to_bytes()), big);
        assert_eq!(
            out.len() as usize,
            PLAIN_HEADER.len() + Joiner::literal_len(big.len()) + 2 + TRAILER_LEN
        );
    }

    #[test]
    fn an_empty_join_is_an_empty_member() {
        assert!(gunzip_one(&Joiner::with_capacity(0, 0).finish().to_bytes()).is_empty());
    }

    /// Bodies that exercise the compressor: empty, tiny, repetitive JSON, random bytes
    /// (incompressible: the compressor then writes stored blocks of its own), long runs.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..64),
            (0usize..3000).prop_map(json_like),
            proptest::collection::vec(any::<u8>(), 0..70_000),
            (0usize..200_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the data and level, a member decodes to its body, alone and as a part (the
        /// compressor must have handed out everything before the final block).
        #[test]
        fn a_member_of_anything_decodes_alone_and_joined(data in body(), level in 0u32..=9) {
            let m = member(&data, Compression::new(level));
            prop_assert_eq!(gunzip_one(&m), data.clone());
            let mut j = Joiner::with_capacity(0, 0);
            j.part(&Part::parse(&m).expect("joinable"));
            prop_assert_eq!(gunzip_one(&j.finish().to_bytes()), data);
        }

        /// Any sequence of parts and literals, at any level, joins into one member that decodes
        /// to the concatenation, with nothing after it.
        #[test]
        fn joined_parts_and_literals_decode_to_the_concatenation(
            pieces in proptest::collection::vec((any::<bool>(), body(), 0u32..=9), 0..8),
        ) {
            let mut expected = Vec::new();
            let mut j = Joiner::with_capacity(0, 0);
            for (is_part, data, level) in &pieces {
                if *is_part {
                    let m = member(data, Compression::new(*level));
                    j.part(&Part::parse(&m).expect("joinable"));
                } else {
                    j.literal(data);
                }
                expected.extend_from_slice(data);
            }
            prop_assert_eq!(gunzip_one(&j.finish().to_bytes()), expected);
        }
    }

    /// Incompressible data of many sizes: the compressor then writes stored blocks and, with a
    /// small output buffer, stops in the middle of a sync flush (the case that once lost the last
    /// byte of a 63 491-byte body).
    #[test]
    fn incompressible_bodies_of_many_sizes_decode() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(63_491);
        for len in (30_000..140_000)
            .step_by(1_531)
            .chain([63_491, 65_535, 65_536, 131_072])
        {
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            for level in [1, 6, 9] {
                let m = member(&data, Compression::new(level));
                assert!(gunzip_one(&m) == data, "{len} bytes at level {level}");
            }
        }
    }

    /// The table-driven combine against crc32fast's `combine`, on random CRCs with every length
    /// below 2^16, random lengths up to 2^34 (past the tables) and the boundaries.
    #[test]
    fn crc_combine_is_crc32fasts() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(32);
        let reference = |a: u32, b: u32, len: u64| {
            let mut h = crc32fast::Hasher::new_with_initial(a);
            h.combine(&crc32fast::Hasher::new_with_initial_len(b, len));
            h.finalize()
        };
        let boundaries = [
            0,
            1,
            (1 << SHIFT_BITS) - 1,
            1 << SHIFT_BITS,
            u64::from(u32::MAX),
        ];
        let lens: Vec<u64> = (0..1u64 << 16)
            .chain((0..20_000).map(|_| rng.random_range(0..1u64 << 34)))
            .chain(boundaries)
            .collect();
        for len in lens {
            let (a, b) = (rng.random::<u32>(), rng.random::<u32>());
            assert_eq!(crc32_combine(a, b, len), reference(a, b, len), "len {len}");
        }
    }

    /// The combine against a CRC computed over the concatenation, on random splits.
    #[test]
    fn crc_combine_matches_the_crc_of_the_concatenation() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        for _ in 0..2000 {
            let a: Vec<u8> = (0..rng.random_range(0..3000))
                .map(|_| rng.random())
                .collect();
            let b: Vec<u8> = (0..rng.random_range(0..3000))
                .map(|_| rng.random())
                .collect();
            let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
            assert_eq!(
                crc32_combine(crc32fast::hash(&a), crc32fast::hash(&b), b.len() as u64),
                crc32fast::hash(&whole)
            );
        }
    }
}
