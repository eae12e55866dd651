//! The shoal daemon and CLI.
