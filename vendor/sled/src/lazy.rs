//! This module exists because `lazy_static` causes TSAN to
//! be very unhappy. We rely heavily on TSAN for finding
//! races, so we don't use `lazy_static`.
//!
//! weir: on top of `std::sync::OnceLock`, which parks the threads that wait for the first
//! initialization. sled's own spun on an atomic flag, and the I/O pool's queue is initialized by
//! spawning its seven threads, each of which derefs the queue at once: they spun on the CPU the
//! spawning thread needed (~7% of a one-step `weir run`'s CPU on 2 cores; see WEIR.md).

use std::sync::OnceLock;

/// A lazily initialized value
pub struct Lazy<T, F> {
    value: OnceLock<T>,
    init: F,
}

impl<T, F> Lazy<T, F> {
    /// Create a new Lazy
    pub const fn new(init: F) -> Self
    where
        F: Sized,
    {
        Self { value: OnceLock::new(), init }
    }
}

impl<T, F> std::ops::Deref for Lazy<T, F>
where
    F: Fn() -> T,
{
    type Target = T;

    fn deref(&self) -> &T {
        self.value.get_or_init(|| (self.init)())
    }
}
