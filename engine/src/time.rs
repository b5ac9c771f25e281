//! Wall-clock time as the run machine counts it (milliseconds since the Unix epoch). The one
//! place the engine turns a `SystemTime` into `Millis`; it knows nothing of the wire and reads
//! no clock (that is `clock.rs`'s job).

use std::time::{SystemTime, UNIX_EPOCH};

use weir_core::run::Millis;

pub fn millis(at: SystemTime) -> Millis {
    Millis(at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}
