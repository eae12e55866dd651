//! Trace reports.
