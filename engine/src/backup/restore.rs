//! `weir restore FILE --data-dir DIR`: a backup into a new data folder, with no engine running.
//! It refuses a folder that holds anything, reads the whole file once to check every checksum,
//! the totals and the digest before writing anything, then reads it again: blobs go into
//! `DIR/artifacts` (each fsynced and renamed into place, its digest checked again), the records
//! are spooled and, once the file checked out a second time, imported into `DIR/db` in one
//! flushed transaction (`Store::import`), which is the restore's commit point. A failure on the
//! way removes what it wrote, leaving the folder as it found it.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use weir_data::artifact::{self, Digest};

use super::{Error, Summary, Visit, read, verify};
use crate::store::Store;

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub summary: Summary,
    /// Records imported into the store.
    pub records: usize,
}

/// Restores the backup `file` into `data_dir` (missing or empty); `step` hears what it does
/// ("checking", "writing").
pub fn restore(file: &Path, data_dir: &Path, step: &mut dyn FnMut(&str)) -> Result<Restored, Error> {
    refuse_non_empty(data_dir)?;
    let open = || File::open(file).map(BufReader::new).map_err(|e| Error::io("open the backup file", e));
    step("checking every checksum");
    verify(open()?)?;
    fs::create_dir_all(data_dir).map_err(|e| Error::io("create the data folder", e))?;
    step("writing blobs and records");
    let written = [data_dir.join("db"), data_dir.join("artifacts"), data_dir.join("restore-records.tmp")];
    let result = write(open()?, data_dir, &written[2]);
    let _ = fs::remove_file(&written[2]);
    if result.is_err() {
        for p in &written[..2] {
            let _ = fs::remove_dir_all(p);
        }
    }
    result
}

fn write(input: impl Read, data_dir: &Path, spool_path: &Path) -> Result<Restored, Error> {
    let store = Store::open(&data_dir.join("db"))?;
    if !store.is_empty()? {
        return Err(Error::Target(format!("the store in {} already holds records", data_dir.display())));
    }
    let blobs = artifact::Store::open(&data_dir.join("artifacts"))?;
    let spool = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(spool_path)
        .map_err(|e| Error::io("create a temporary file in the data folder", e))?;
    let mut into = Into { spool, blobs };
    let summary = read(input, &mut into)?;
    into.spool.seek(SeekFrom::Start(0)).map_err(|e| Error::io("read the records back", e))?;
    let records = store.import(BufReader::new(&into.spool))?;
    Ok(Restored { summary, records })
}

/// Where the second read puts what it checked.
struct Into {
    spool: File,
    blobs: artifact::Store,
}

impl Visit for Into {
    fn records(&mut self) -> Result<&mut dyn Write, Error> {
        Ok(&mut self.spool)
    }

    fn blob(&mut self, digest: &Digest, payload: &mut dyn Read) -> Result<(), Error> {
        let (stored, _) = self.blobs.put_reader(payload, Path::new(&format!("blob {digest} of the backup")))?;
        if stored != *digest {
            // The reader names the damage; what was stored under another name goes.
            self.blobs.remove_blob(&stored)?;
        }
        Ok(())
    }
}

/// A restore never mixes with what a folder holds.
fn refuse_non_empty(dir: &Path) -> Result<(), Error> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(entry) => {
                let name: PathBuf = entry.map(|e| e.file_name().into()).unwrap_or_default();
                Err(Error::Target(format!(
                    "{} is not empty (it holds {}): restore into a new or empty folder, then start \
                     `weir server --data-dir` on that one",
                    dir.display(),
                    name.display()
                )))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Error::Target(format!("{} is a file, not a folder", dir.display())))
        }
        Err(e) => Err(Error::io("read the data folder", e)),
    }
}
