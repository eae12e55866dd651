//! The simulated disk: survives a node crash, but keeps only what was synced (optionally a torn
//! part of the unsynced tail). It is core's in-memory disk, shared with raft's unit tests so both
//! model crashes the same way.

pub use shoal_core::env::MemDisk as SimDisk;
