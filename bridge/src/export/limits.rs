//! What one message of an exporter may hold (beside `export.rs`).

use std::sync::atomic::Ordering;

use helix::RingView;

use super::{Export, Publisher, Source};
use crate::wire;

/// Bytes of a message's headers the server's `max_payload` and a stream's
/// `max_msg_size` count besides its payload, at most: the message id
/// (host, ring, incarnation, epoch, range) and the header block around it.
const HEADERS_ROOM: usize = 512;

/// What a message holds.
pub(super) struct Limits {
    /// Frames, at most.
    pub(super) per_message: usize,
    /// The largest frame payload the server takes in a message.
    pub(super) largest: usize,
}

impl Limits {
    /// What one message of ring `view` may hold: `max_bytes`, and no more
    /// than the server takes (its `max_payload`, 1 MiB by default) nor the
    /// stream (its `max_msg_size`).
    pub(super) fn of(js: &Publisher, x: &Export, view: &RingView, source: &Source) -> Limits {
        let max_payload = view.geometry().max_payload as usize;
        let header = wire::HEADER + source.host.len() + source.ring.len();
        // Both count the publish's headers too. (Found by review: only the
        // server's was kept to, and a stream of 64 KiB messages refused every
        // larger one, for ever; then the server's was kept to without the
        // headers, and a frame within them of it was refused, and sent again,
        // for ever.)
        let server_limit = match js.client().server_info().max_payload {
            0 => usize::MAX,
            n => n.saturating_sub(HEADERS_ROOM),
        };
        // Relaxed: see `Publisher::reread_stream_limit`.
        let stream_limit = js.stream_limit.load(Ordering::Relaxed).saturating_sub(HEADERS_ROOM);
        let server_limit = server_limit.min(stream_limit);
        let room = x.max_bytes.min(server_limit.saturating_sub(header));
        let per_message = x.max_frames.min(room / (max_payload + wire::FRAME_HEADER)).max(1);
        Limits { per_message, largest: server_limit.saturating_sub(header + wire::FRAME_HEADER) }
    }
}
