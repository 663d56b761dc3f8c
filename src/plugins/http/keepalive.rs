//! `tcp-keepalive=true` (curl's CURLOPT_TCP_KEEPALIVE): the HTTP client's
//! TCP connections with SO_KEEPALIVE set. ureq's own TCP connector has no
//! such option, so this one stands in for it in the connector chain
//! (proxy CONNECT first, then this, then TLS).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, Connector, Either, LazyBuffers, NativeTlsConnector,
    NextTimeout, Transport,
};

/// The connector chain of an agent whose connections keep alive.
pub fn connector() -> impl Connector {
    ().chain(ConnectProxyConnector::default())
        .chain(KeepaliveTcp)
        .chain(NativeTlsConnector::default())
}

#[derive(Debug)]
struct KeepaliveTcp;

impl<In: Transport> Connector<In> for KeepaliveTcp {
    type Out = Either<In, KeepaliveTransport>;

    fn connect(
        &self,
        details: &ureq::unversioned::transport::ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if chained.is_some() {
            return Ok(chained.map(Either::A));
        }
        let mut last = None;
        for addr in details.addrs.iter() {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_nodelay(details.config.no_delay())?;
                    let on: libc::c_int = 1;
                    // SAFETY: setsockopt on an open socket with a c_int.
                    let r = unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_KEEPALIVE,
                            &on as *const libc::c_int as *const libc::c_void,
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    if r != 0 {
                        return Err(std::io::Error::last_os_error().into());
                    }
                    let buffers = LazyBuffers::new(
                        details.config.input_buffer_size(),
                        details.config.output_buffer_size(),
                    );
                    return Ok(Some(Either::B(KeepaliveTransport { s, buffers })));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| std::io::Error::other("no address to connect to"))
            .into())
    }
}

#[derive(Debug)]
pub struct KeepaliveTransport {
    s: TcpStream,
    buffers: LazyBuffers,
}

fn io_err(e: std::io::Error, t: &NextTimeout) -> ureq::Error {
    if matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) {
        ureq::Error::Timeout(t.reason)
    } else {
        e.into()
    }
}

impl Transport for KeepaliveTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let t = timeout.for_write();
        self.s.set_write_timeout(t.not_zero().map(|d| *d))?;
        let out = &self.buffers.output()[..amount];
        self.s.write_all(out).map_err(|e| io_err(e, &t))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let t = timeout.for_read();
        self.s.set_read_timeout(t.not_zero().map(|d| *d))?;
        let n = loop {
            match self.s.read(self.buffers.input_append_buf()) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.map_err(|e| io_err(e, &t))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        // Open when nothing is waiting to be read and the peer has not
        // closed: a non-blocking read would block.
        if self.s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let open =
            matches!(self.s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        open && self.s.set_nonblocking(false).is_ok()
    }
}
