//! `weir restore FILE --data-dir DIR`: a `weir backup` file into a new data folder, with no
//! engine running. Printing and exit codes only: checking and writing are
//! `weir_engine::backup::restore`'s (every checksum checked before anything is written; a
//! folder that holds anything refused).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use weir_engine::backup;

pub const RESTORE_EXIT_CODES: &str = "\
Exit status:
  0  restored: start `weir server --data-dir DIR` (and workers) on it
  1  refused or failed: DIR holds something, FILE is not a whole weir backup (truncated,
     damaged: the message names the section and byte), or writing failed (nothing is left
     half-written in DIR)
  2  usage error";

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file `weir backup` wrote.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data folder to restore into: missing or empty. Start `weir server --data-dir DIR`
    /// on it afterwards.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

pub fn run(args: RestoreArgs) -> ExitCode {
    let result = backup::restore(&args.file, &args.data_dir, &mut |step| eprintln!("restore: {step}"));
    match result {
        Ok(r) => {
            let t = &r.summary.trailer;
            println!(
                "restored {} records and {} blobs ({} bytes) from a backup taken at {} UTC by weir {} into {}",
                r.records,
                t.blobs,
                t.blob_bytes,
                crate::display::datetime(r.summary.header.created_at.0),
                r.summary.header.weir_version,
                args.data_dir.display()
            );
            for d in &t.missing {
                eprintln!("warning: blob {d} was already missing on the server when the backup was taken");
            }
            println!("next: weir server --data-dir {}", args.data_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            match e {
                backup::Error::Target(_) => {
                    eprintln!("help: pass a new folder to --data-dir (it is created), e.g. --data-dir ./weir-restored")
                }
                backup::Error::Truncated { .. } | backup::Error::NoTrailer { .. } | backup::Error::Damaged { .. } => {
                    eprintln!(
                        "help: nothing was written; restore from another backup, or take a new one (`weir backup FILE`)"
                    )
                }
                _ => {}
            }
            ExitCode::from(1)
        }
    }
}
