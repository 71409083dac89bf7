//! A sha256 whose state can be written down between two chunks and picked
//! up again, by another process: what lets any replica of ferry-server
//! continue an upload session another one began (see the README's upload
//! sessions).
//!
//! `sha2::Sha256` keeps its state private, so this drives sha2's own block
//! function (`compress256`, with the same CPU extensions) and keeps the
//! eight state words, the byte count and the partial block (under 64 bytes)
//! itself. Serialized, that is about 200 bytes of JSON, small enough to
//! rewrite in a session record after every chunk.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

use crate::Digest;

/// sha256's initial state (FIPS 180-4, 5.3.3).
const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const BLOCK: usize = 64;
/// Blocks handed to `compress256` at once (64 KiB), copied into one
/// buffer first: a safe way to get `&[u8]` into the block type it takes.
const BATCH: usize = 1024;

type Block = GenericArray<u8, U64>;

/// sha256 midway through a message: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Saved", into = "Saved")]
pub struct Midstate {
    state: [u32; 8],
    /// Bytes hashed so far, the partial block included.
    len: u64,
    /// The bytes after the last whole block (fewer than 64).
    tail: Vec<u8>,
}

impl Default for Midstate {
    fn default() -> Self {
        Self::new()
    }
}

impl Midstate {
    pub fn new() -> Self {
        Self {
            state: INITIAL,
            len: 0,
            tail: Vec::with_capacity(BLOCK),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() < BLOCK {
                return;
            }
            let block = Block::clone_from_slice(&self.tail);
            sha2::compress256(&mut self.state, std::slice::from_ref(&block));
            self.tail.clear();
        }
        let whole = bytes.len() / BLOCK * BLOCK;
        // Filled with plain copies: `clone_from_slice` goes byte by byte
        // through an iterator and cost as much as the hashing itself.
        let mut batch: Vec<Block> = vec![Block::default(); BATCH.min(whole / BLOCK)];
        for blocks in bytes[..whole].chunks(BATCH * BLOCK) {
            let n = blocks.len() / BLOCK;
            for (block, bytes) in batch.iter_mut().zip(blocks.chunks_exact(BLOCK)) {
                block.as_mut_slice().copy_from_slice(bytes);
            }
            sha2::compress256(&mut self.state, &batch[..n]);
        }
        self.tail.extend_from_slice(&bytes[whole..]);
    }

    /// The digest of everything hashed (the padding of FIPS 180-4, 5.1.1).
    pub fn finish(&self) -> Digest {
        let mut state = self.state;
        let mut last = self.tail.clone();
        last.push(0x80);
        while last.len() % BLOCK != BLOCK - 8 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let blocks: Vec<Block> = last
            .chunks_exact(BLOCK)
            .map(Block::clone_from_slice)
            .collect();
        sha2::compress256(&mut state, &blocks);
        let mut out = [0u8; 32];
        for (word, bytes) in state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        Digest::from_bytes(out)
    }
}

/// The written-down form: the state words and the tail in hex.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    state: [u32; 8],
    len: u64,
    tail: String,
}

impl From<Midstate> for Saved {
    fn from(m: Midstate) -> Self {
        Self {
            state: m.state,
            len: m.len,
            tail: hex::encode(&m.tail),
        }
    }
}

impl TryFrom<Saved> for Midstate {
    type Error = String;

    fn try_from(saved: Saved) -> Result<Self, String> {
        let tail = hex::decode(&saved.tail).map_err(|e| format!("hash tail: {e}"))?;
        // The tail is what is left after the whole blocks of `len` bytes.
        if tail.len() >= BLOCK || tail.len() as u64 != saved.len % BLOCK as u64 {
            return Err(format!(
                "hash tail of {} bytes does not fit a length of {}",
                tail.len(),
                saved.len
            ));
        }
        Ok(Self {
            state: saved.state,
            len: saved.len,
            tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_known_inputs_match_sha256() {
        assert_eq!(Midstate::new().finish(), Digest::of(b""));
        let mut m = Midstate::new();
        m.update(b"abc");
        assert_eq!(m.finish(), Digest::of(b"abc"));
        // Past one batch of blocks, and not a multiple of the block size.
        let big: Vec<u8> = (0..200_001u32).map(|i| (i % 253) as u8).collect();
        let mut m = Midstate::new();
        m.update(&big);
        assert_eq!(m.finish(), Digest::of(&big));
        assert_eq!(m.len(), 200_001);
    }

    #[test]
    fn a_state_with_a_tail_that_does_not_fit_its_length_is_refused() {
        let mut m = Midstate::new();
        m.update(b"hello");
        let json = serde_json::to_string(&m).unwrap();
        let bad = json.replace("\"len\":5", "\"len\":6");
        assert!(serde_json::from_str::<Midstate>(&bad).is_err());
        assert_eq!(serde_json::from_str::<Midstate>(&json).unwrap(), m);
    }

    proptest! {
        #[test]
        fn written_down_and_resumed_anywhere_it_hashes_like_sha256(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut m = Midstate::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                m.update(&data[at..cut]);
                at = cut;
                // Another process picks it up from the written-down form.
                m = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            }
            prop_assert_eq!(m.finish(), Digest::of(&data));
        }
    }
}
