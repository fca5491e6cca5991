//! helixctl's verbs, a file each.

pub mod doctor;
pub mod metrics;
pub mod tail;
pub mod top;
pub mod twin;
