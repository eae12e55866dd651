//! raft (being written).
