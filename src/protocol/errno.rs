//! NBD error numbers: the only values that ever go on the wire in a reply.
//! Must not import anything outside `protocol`.

use std::fmt;

/// An NBD error number (protocol §"Error values"). Host errnos are mapped
/// onto these with [`Errno::from_io`]; raw host values are never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Errno {
    /// EPERM: not permitted (a write to a read-only export).
    Perm = 1,
    /// EIO: an I/O error.
    Io = 5,
    /// ENOMEM: out of memory.
    NoMem = 12,
    /// EINVAL: an invalid request.
    Inval = 22,
    /// ENOSPC: no space (a write past the end).
    NoSpc = 28,
    /// EOVERFLOW: the answer does not fit.
    Overflow = 75,
    /// ENOTSUP: not supported.
    NotSup = 95,
    /// ESHUTDOWN: the server is shutting down.
    Shutdown = 108,
}

impl Errno {
    /// The value sent in a simple or structured error reply.
    pub fn wire(self) -> u32 {
        self as u32
    }

    /// The conventional C name, e.g. `"EIO"`.
    pub fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::Io => "EIO",
            Errno::NoMem => "ENOMEM",
            Errno::Inval => "EINVAL",
            Errno::NoSpc => "ENOSPC",
            Errno::Overflow => "EOVERFLOW",
            Errno::NotSup => "ENOTSUP",
            Errno::Shutdown => "ESHUTDOWN",
        }
    }

    /// Parse a name as scripts write it (`"EIO"`, `"enospc"`, `"EROFS"`...).
    /// Host-only names are folded onto the NBD set as nbdkit does.
    pub fn from_name(name: &str) -> Option<Errno> {
        let up = name.trim().to_ascii_uppercase();
        Some(match up.as_str() {
            "EPERM" | "EROFS" | "EACCES" => Errno::Perm,
            "EIO" => Errno::Io,
            "ENOMEM" => Errno::NoMem,
            "EINVAL" | "ERANGE" => Errno::Inval,
            "ENOSPC" | "EDQUOT" | "EFBIG" => Errno::NoSpc,
            "EOVERFLOW" => Errno::Overflow,
            "ENOTSUP" | "EOPNOTSUPP" => Errno::NotSup,
            "ESHUTDOWN" => Errno::Shutdown,
            _ => return None,
        })
    }

    /// Map a raw host errno onto the NBD set.
    pub fn from_raw(raw: i32) -> Errno {
        match raw {
            libc_consts::EPERM | libc_consts::EROFS | libc_consts::EACCES => Errno::Perm,
            libc_consts::ENOMEM => Errno::NoMem,
            libc_consts::EINVAL | libc_consts::ERANGE => Errno::Inval,
            libc_consts::ENOSPC | libc_consts::EDQUOT | libc_consts::EFBIG => Errno::NoSpc,
            libc_consts::EOVERFLOW => Errno::Overflow,
            libc_consts::ENOTSUP => Errno::NotSup,
            libc_consts::ESHUTDOWN => Errno::Shutdown,
            _ => Errno::Io,
        }
    }

    /// Map a host I/O error onto the NBD set (anything unknown is EIO).
    pub fn from_io(e: &std::io::Error) -> Errno {
        e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::Io)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Linux errno values, spelled out so `protocol` needs no libc.
mod libc_consts {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
    pub const ENOMEM: i32 = 12;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ERANGE: i32 = 34;
    pub const EOVERFLOW: i32 = 75;
    pub const ENOTSUP: i32 = 95;
    pub const ESHUTDOWN: i32 = 108;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in [
            Errno::Perm,
            Errno::Io,
            Errno::NoMem,
            Errno::Inval,
            Errno::NoSpc,
            Errno::Overflow,
            Errno::NotSup,
            Errno::Shutdown,
        ] {
            assert_eq!(Errno::from_name(e.name()), Some(e));
        }
        assert_eq!(Errno::from_name("EROFS"), Some(Errno::Perm));
        assert_eq!(Errno::from_name("EWHAT"), None);
        assert_eq!(Errno::from_raw(38), Errno::Io);
        assert_eq!(Errno::NoSpc.wire(), 28);
    }
}
