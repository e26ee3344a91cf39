//! Replicated, revisioned key-value store: openraft over redb
