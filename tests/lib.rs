//! shared helpers for weir end-to-end tests
