//! The process's lifecycle as a value every task holds: running, then draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Shared drain state: set once on SIGTERM/SIGINT, never cleared.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the drain: readiness turns 503, intake answers 503, workers stop
    /// claiming new work.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.token.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Completes when the drain starts.
    pub async fn drained(&self) {
        self.token.cancelled().await;
    }
}

/// Tells the service manager how the process stands (`READY=1` once the
/// listeners and the store are up, `STOPPING=1` when the drain starts), as
/// systemd's `Type=notify` expects: one datagram to the socket named by
/// `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without
/// that variable it does nothing; a failure is logged, never fatal.
pub fn notify_service_manager(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notification(&socket, state) {
        tracing::warn!(error = %e, state, "could not notify the service manager");
    }
}

fn send_notification(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = socket.as_bytes();
    let address = match name.strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM: what starts the drain.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_is_one_datagram_to_the_named_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_notification(path.as_os_str(), "READY=1").unwrap();
        let mut got = [0u8; 64];
        let n = manager.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"READY=1");
    }
}
