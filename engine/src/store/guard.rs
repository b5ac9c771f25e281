//! Containing sled: [`contain`] runs a closure that calls into sled and turns a panic inside
//! it (sled 0.34 indexes out of bounds on some truncated files) into a typed error, without
//! the panic's message reaching stderr; [`classify`] turns sled's errors into the store's own,
//! naming the folder (a full disk is [`Error::NoSpace`], not "Io(...)"). It decides nothing
//! about what to do next: callers quarantine, skip or report.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use super::Error;

thread_local! {
    /// Set while this thread runs inside [`contain`]: a panic then is recorded, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The message of the last panic contained on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that keeps contained panics quiet and passes every
/// other panic to the hook that was there before.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                LAST.with(|l| *l.borrow_mut() = Some(format!("{message}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it comes back as `Err(message)`.
pub(super) fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|_| LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "unknown panic".to_string()))
}

pub use weir_data::is_no_space;

/// The store's error for a sled error met while using the database in `dir`.
pub(super) fn classify(e: Error, dir: &Path) -> Error {
    match e {
        Error::Sled(sled::Error::Io(io)) if is_no_space(&io) => Error::NoSpace { dir: dir.to_path_buf() },
        Error::Io(io) if is_no_space(&io) => Error::NoSpace { dir: dir.to_path_buf() },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_is_an_error_with_its_message_and_the_thread_goes_on() {
        let v: Vec<u8> = Vec::new();
        let index = v.len() + 3;
        let err = contain(|| v[index]).unwrap_err();
        assert!(err.contains("index out of bounds"), "{err}");
        assert_eq!(contain(|| 7).unwrap(), 7);
        assert!(!QUIET.with(Cell::get), "the quiet flag is reset");
    }

    #[test]
    fn a_full_disk_is_recognised_by_kind_code_or_sleds_cloned_text() {
        let dir = Path::new("/data/db");
        for io in [
            std::io::Error::from_raw_os_error(28),
            std::io::Error::new(std::io::ErrorKind::StorageFull, "x"),
            std::io::Error::other("Os { code: 28, kind: StorageFull, message: \"No space left on device\" }"),
        ] {
            let e = classify(Error::Sled(sled::Error::Io(io)), dir);
            assert!(matches!(&e, Error::NoSpace { dir: d } if d == dir), "{e:?}");
            assert!(e.to_string().starts_with("no space left on /data/db"), "{e}");
        }
        let other = classify(Error::Sled(sled::Error::Io(std::io::Error::from_raw_os_error(5))), dir);
        assert!(matches!(other, Error::Sled(_)));
    }
}
