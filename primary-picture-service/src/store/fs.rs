//! Filesystem store (being written).
