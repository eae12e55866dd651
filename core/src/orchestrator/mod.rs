//! orchestrator (being written).
