//! Writing a reader table entry as another process could: shared by the
//! library's tests and helix-bridge's (`bridge/tests/support`, by path).

/// Writes process `pid` (its pid and start time) into reader entry `index`
/// of ring `ring` as its owner, as any process that may write the reader
/// table can (or as `pid`'s own join would have).
pub fn hand_entry_to(ns: &helix::shm::Namespace, ring: &str, index: usize, pid: u32) {
    use helix::layout::{entry_state, ReaderEntry, ENTRY_ACTIVE, READERS_HEADER_SIZE, READER_ENTRY_SIZE};
    use std::mem::offset_of;
    use std::os::unix::fs::FileExt;
    let start_time = helix::process::start_time(pid).expect("a live process");
    let table = std::fs::OpenOptions::new().write(true).open(ns.readers_path(ring)).unwrap();
    let at = |field: usize| (READERS_HEADER_SIZE + index * READER_ENTRY_SIZE + field) as u64;
    table.write_all_at(&entry_state(pid, ENTRY_ACTIVE).to_ne_bytes(), at(offset_of!(ReaderEntry, state))).unwrap();
    table.write_all_at(&pid.to_ne_bytes(), at(offset_of!(ReaderEntry, pid))).unwrap();
    table.write_all_at(&start_time.to_ne_bytes(), at(offset_of!(ReaderEntry, start_time))).unwrap();
}
