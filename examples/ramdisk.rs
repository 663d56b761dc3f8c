//! A RAM disk as a native plugin on the library API.
//!   cargo run --example ramdisk -- 64M --run 'nbdinfo $uri'
//!   cargo run --example ramdisk -- 1G -U /tmp/sock
use nbdscript::{Capabilities, Plugin, Result, Server};
use std::sync::RwLock;

struct RamDisk(RwLock<Vec<u8>>);

impl Plugin for RamDisk {
    type Handle = ();
    fn open(&self, _readonly: bool, _export_name: &str) -> Result<()> {
        Ok(())
    }
    fn get_size(&self, _: &()) -> Result<u64> {
        Ok(self.0.read().unwrap().len() as u64)
    }
    fn capabilities(&self, _: &()) -> Result<Capabilities> {
        let multi_conn = true; // every connection sees the same bytes
        Ok(Capabilities {
            write: true,
            flush: true,
            multi_conn,
            ..Default::default()
        })
    }
    fn pread(&self, _: &(), buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0.read().unwrap()[o..o + buf.len()]);
        Ok(())
    }
    fn pwrite(&self, _: &(), buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        let o = offset as usize;
        self.0.write().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(size) = args.first().and_then(|s| nbdscript::parse_size(s).ok()) else {
        eprintln!("usage: ramdisk SIZE [-U SOCKET | --run COMMAND]");
        std::process::exit(2);
    };
    let mut server = Server::new(RamDisk(RwLock::new(vec![0; size as usize])));
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("-U"), Some(path)) => server = server.unix_socket(path),
        (Some("--run"), Some(cmd)) => server = server.run_command(cmd),
        _ => server = server.print_uri(true),
    }
    std::process::exit(server.run()?.into())
}
