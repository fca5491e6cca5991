//! The append path of [`Ledger`]: frames into the open FRAME block, a
//! block sealed into the chain as one Blake3 input, GAP and RING records
//! as blocks of one. No allocation once the buffer has grown to a batch.

use super::*;

/// What a FRAME block being filled states once for all its frames.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenBlock {
    ring: u16,
    seq: u64,
    epoch: u64,
    /// Frames reserved so far.
    count: u32,
}

impl Ledger {
    pub(super) fn append_ring(&mut self, id: u16, decl: &RingDecl, next_seq: u64) {
        let h = BlockHeader { rtype: RecordType::Ring as u16, ring: id, seq: next_seq, ..Default::default() };
        self.push_block(h, &decl.encode());
    }

    /// Adds a GAP record: sequences `first..=last` of ring `id` are lost,
    /// overwritten before they were read ([`GAP_OVERRUN`]).
    pub fn append_gap(&mut self, id: u16, first: u64, last: u64, epoch: u64) {
        self.append_gap_for(id, first, last, epoch, GAP_OVERRUN);
    }

    /// [`Ledger::append_gap`] for `reason` ([`GAP_OVERRUN`],
    /// [`GAP_TOO_LARGE`](super::super::format::GAP_TOO_LARGE)).
    pub fn append_gap_for(&mut self, id: u16, first: u64, last: u64, epoch: u64, reason: u32) {
        let recv_ns = crate::process::realtime_ns();
        // Signed before it if a checkpoint is due by its time (`sign_before`).
        if self.interval_passed(recv_ns) {
            self.checkpoint(recv_ns, Reason::Interval);
        }
        let h =
            BlockHeader { rtype: RecordType::Gap as u16, ring: id, seq: first, epoch, recv_ns, ..Default::default() };
        self.push_block(h, &GapInfo { last, reason }.encode());
        self.stats.gaps += 1;
        // Saturating: a writer's `published` decides the ranges.
        self.stats.lost = self.stats.lost.saturating_add((last - first).saturating_add(1));
    }

    /// Signs checkpoints with `signer` from now on (`None`: no more). The
    /// interval counts from now.
    pub fn set_signer(&mut self, signer: Option<Signer>) {
        self.signer = signer;
        self.signed = (crate::process::realtime_ns(), self.signed.1);
    }

    /// The signer, if any.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// Appends a checkpoint of the chain as it is, made at `now_ns`
    /// (CLOCK_REALTIME), if a signer is set; returns whether it did. The
    /// next [`Ledger::flush`] writes it.
    pub fn checkpoint(&mut self, now_ns: u64, why: Reason) -> bool {
        let Some(signer) = &self.signer else { return false };
        let c = &self.chain;
        let cp = signer.sign(self.segment, c.records, c.blocks, c.hash, now_ns, why);
        let h = BlockHeader { rtype: RecordType::Checkpoint as u16, recv_ns: now_ns, ..Default::default() };
        self.push_block(h, &cp.encode());
        self.signed = (now_ns, self.chain.blocks);
        self.stats.checkpoints += 1;
        true
    }

    /// Appends a checkpoint if the signer's interval has passed since the
    /// last one at `now_ns` and blocks were sealed since (an idle ledger
    /// signs nothing new); returns whether it did. The recorder calls it
    /// before reading each batch, so every block is signed within about an
    /// interval of being read (`verify` allows two). A clock set back
    /// (before the last checkpoint) makes one due at once: otherwise
    /// blocks stamped by the clock set back would go unsigned until it
    /// came round again, and `verify` would find no checkpoint among them.
    pub fn checkpoint_if_due(&mut self, now_ns: u64) -> bool {
        let set_back = self.signer.is_some() && now_ns < self.signed.0 && self.chain.blocks != self.signed.1;
        (set_back || self.interval_passed(now_ns)) && self.checkpoint(now_ns, Reason::Interval)
    }

    /// Whether a signer's interval has passed since the last checkpoint at
    /// `now_ns`, with blocks sealed since. The ledger asks it itself at
    /// each FRAME or GAP block's time too (`sign_before`).
    fn interval_passed(&self, now_ns: u64) -> bool {
        let Some(signer) = &self.signer else { return false };
        let due = self.signed.0.saturating_add(u64::from(signer.interval_s()) * 1_000_000_000);
        now_ns >= due && self.chain.blocks != self.signed.1
    }

    /// Seals a block of one record (GAP or RING) with `body`.
    fn push_block(&mut self, h: BlockHeader, body: &[u8]) {
        assert!(self.open.is_none(), "ledger {}: a record appended inside an open FRAME block", self.dir.display());
        self.buf.resize(self.sealed + BLOCK_HEADER_LEN, 0);
        h.encode(&mut self.buf[self.sealed..]);
        self.buf.extend_from_slice(body);
        self.finish_block(1);
    }

    /// Appends an unsealed frame of `len` payload bytes to the open FRAME
    /// block (opening one if none is) and returns the payload to fill.
    /// [`Ledger::seal`] keeps it or drops it. The frames of one block are
    /// of one ring, consecutive, read under one epoch, and share a time
    /// read: the first frame's `recv_ns`, or the one
    /// [`Ledger::stamp_unsealed`] sets. Anything else is a bug in the
    /// caller, and panics; so does a block body past [`MAX_BLOCK_BODY`]
    /// (the caller reads batches of at most [`BLOCK_TARGET`] bytes).
    #[inline]
    pub fn reserve_frame(&mut self, id: u16, seq: u64, epoch: u64, recv_ns: u64, kind: u32, len: usize) -> &mut [u8] {
        let open = match &mut self.open {
            Some(o) => {
                let next = o.seq.wrapping_add(u64::from(o.count));
                assert!(
                    o.ring == id && o.epoch == epoch && seq == next,
                    "ledger: frame {seq} of ring {id} (epoch {epoch}) does not continue the block of ring {} \
                     (epoch {}) at {next}",
                    o.ring,
                    o.epoch
                );
                o
            }
            None => {
                debug_assert_eq!(self.sealed, self.buf.len());
                self.buf.resize(self.sealed + BLOCK_HEADER_LEN, 0);
                let h = BlockHeader {
                    rtype: RecordType::Frame as u16,
                    ring: id,
                    seq,
                    epoch,
                    recv_ns,
                    ..Default::default()
                };
                h.encode(&mut self.buf[self.sealed..]);
                self.open.insert(OpenBlock { ring: id, seq, epoch, count: 0 })
            }
        };
        open.count += 1;
        let at = self.buf.len();
        let body = at - self.sealed - BLOCK_HEADER_LEN + ENTRY_HEADER_LEN + len;
        assert!(body <= MAX_BLOCK_BODY, "ledger: a block body of {body} bytes (at most {MAX_BLOCK_BODY})");
        self.buf.resize(at + ENTRY_HEADER_LEN + len, 0);
        encode_entry(&mut self.buf[at..], len, kind);
        &mut self.buf[at + ENTRY_HEADER_LEN..]
    }

    /// Sets the time read (`recv_ns`) of the open block: a batch is
    /// stamped once it has been read, so no record's time precedes its
    /// frame's publication.
    #[inline]
    pub fn stamp_unsealed(&mut self, recv_ns: u64) {
        if self.open.is_some() {
            self.buf[self.sealed + 24..self.sealed + 32].copy_from_slice(&recv_ns.to_le_bytes());
        }
    }

    /// Keeps the first `n` frames of the open block (of ring `id`) and
    /// seals it: hashes it into the chain as one input. Drops the rest
    /// (frames the ring did not confirm as intact), and the whole block if
    /// `n` is 0.
    #[inline]
    pub fn seal(&mut self, id: u16, n: usize) {
        let Some(open) = self.open.take() else {
            assert_eq!(n, 0, "ledger: sealing {n} frames of ring {id}, none reserved");
            return;
        };
        assert!(open.ring == id && n <= open.count as usize, "ledger: sealing {n} frames of ring {id}: {open:?}");
        if n == 0 {
            self.buf.truncate(self.sealed);
            return;
        }
        if n < open.count as usize {
            let mut end = self.sealed + BLOCK_HEADER_LEN;
            for _ in 0..n {
                end += entry_len(&self.buf[end..]);
            }
            self.buf.truncate(end);
        }
        let recv_ns = u64::from_le_bytes(self.buf[self.sealed + 24..self.sealed + 32].try_into().unwrap());
        if self.interval_passed(recv_ns) {
            self.sign_before(recv_ns);
        }
        self.finish_block(n as u32);
    }

    /// Signs a checkpoint before the FRAME block being sealed, stamped
    /// `recv_ns`, which one is due by ([`Ledger::interval_passed`]); the
    /// block moves after it (its bytes copied: a rare path). The recorder
    /// asks before each batch and stamps the batch after reading it: one
    /// stopped between the two for over an interval (a VM paused, SIGSTOP,
    /// a slow read) stamped blocks more than two intervals after the first
    /// unsigned one, and `verify --pubkey` failed the untouched ledger for
    /// good (found by review). Asked at the block's own time, never.
    fn sign_before(&mut self, recv_ns: u64) {
        let block = self.buf.split_off(self.sealed);
        self.checkpoint(recv_ns, Reason::Interval);
        self.buf.extend_from_slice(&block);
    }

    /// Completes the block at `sealed` (its header's type, ring, sequence,
    /// epoch and time set; its body after it) as holding `count` records:
    /// its lengths, its chain hash, and the same rules `verify` applies.
    fn finish_block(&mut self, count: u32) {
        let at = self.sealed;
        let body_len = self.buf.len() - at - BLOCK_HEADER_LEN;
        let h = BlockHeader {
            len: (MIN_BLOCK_LEN + body_len) as u32,
            count,
            body_len: body_len as u32,
            ..BlockHeader::decode(&self.buf[at..])
        };
        h.encode(&mut self.buf[at..]);
        let hash = chain(&self.chain.hash, &self.buf[at..]);
        self.buf.extend_from_slice(&hash);
        let block = split_block(&self.buf[at..]).expect("a block this ledger encoded");
        // A frame out of sequence here is a bug in the caller, and must
        // not reach the disk.
        if let Err(p) = self.chain.accept_block(&block) {
            panic!("ledger {}: appending an invalid block of ring {}: {p}", self.dir.display(), h.ring);
        }
        if h.rtype == RecordType::Frame as u16 {
            self.stats.frames += u64::from(count);
        }
        self.sealed = self.buf.len();
    }
}
