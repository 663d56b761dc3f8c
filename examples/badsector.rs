//! A native filter on the library API: fail reads of one sector with EIO,
//! over a read-only plugin whose sector N is filled with the byte N % 256,
//! made writable by the built-in `cow` filter (named as on the command
//! line).
//!   cargo run --example badsector -- 1M 3 --run 'qemu-io -f raw -c "read 1536 512" $uri'
use nbdscript::{Capabilities, Errno, Error, Filter, Next, Plugin, Result, Server};

struct Sectors(u64);

impl Plugin for Sectors {
    type Handle = ();
    fn open(&self, _readonly: bool, _export_name: &str) -> Result<()> {
        Ok(())
    }
    fn get_size(&self, _: &()) -> Result<u64> {
        Ok(self.0)
    }
    fn capabilities(&self, _: &()) -> Result<Capabilities> {
        Ok(Capabilities {
            multi_conn: true,
            ..Default::default()
        })
    }
    fn pread(&self, _: &(), buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((offset + i as u64) / 512) as u8;
        }
        Ok(())
    }
}

/// Reads touching sector `self.0` fail with EIO; everything else passes.
struct BadSector(u64);

impl Filter for BadSector {
    type Handle = ();
    fn open(&self, _next: &Next, _readonly: bool) -> Result<()> {
        Ok(())
    }
    fn pread(&self, next: &Next, _: &(), buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        let (bad, end) = (self.0 * 512, offset + buf.len() as u64);
        if offset < bad + 512 && bad < end {
            return Err(Error::new(Errno::Io, format!("sector {} is bad", self.0)));
        }
        next.pread(buf, offset, flags)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(size), Some(bad), Some(cmd)) = (
        args.first().and_then(|s| nbdscript::parse_size(s).ok()),
        args.get(1).and_then(|s| s.parse().ok()),
        args.get(3).filter(|_| args[2] == "--run"),
    ) else {
        eprintln!("usage: badsector SIZE SECTOR --run COMMAND");
        std::process::exit(2);
    };
    let server = Server::new(Sectors(size))
        .filter(BadSector(bad)) // nearest the client
        .builtin_filter("cow", &[])?
        .run_command(cmd);
    std::process::exit(server.run()?.into())
}
