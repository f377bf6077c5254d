//! Measures the client's file pipeline on this disk (docs/performance.md, "Attachments"):
//! encrypts FILE into a scratch profile's `attachments/` as an upload does, then checks its
//! digest and decrypts it to a plaintext copy as a save does, and prints the time and rate
//! of each step. Run it under `/usr/bin/time -v` for the peak RSS.
//!
//! `cargo run --release --example attach_file -- FILE SCRATCH_DIR`

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::time::Instant;

use sotto::client::attachment::{crypto, files};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(scratch)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: attach_file FILE SCRATCH_DIR");
    };
    let scratch = std::path::PathBuf::from(scratch);
    let size = std::fs::metadata(&input)?.len() as f64 / (1024.0 * 1024.0);
    let t = Instant::now();
    let sealed = files::seal_into(input.as_ref(), &scratch, 1)?;
    let seal = t.elapsed().as_secs_f64();
    println!("encrypt: {seal:.3} s, {:.0} MiB/s", size / seal);
    let t = Instant::now();
    let mut at_rest = BufReader::new(File::open(files::path(&scratch, 1))?);
    let out = BufWriter::new(File::create(scratch.join("plain"))?);
    crypto::open_checked(&sealed.key, &sealed.digest, &mut at_rest, out)?;
    let open = t.elapsed().as_secs_f64();
    println!("digest + decrypt: {open:.3} s, {:.0} MiB/s", size / open);
    Ok(())
}
