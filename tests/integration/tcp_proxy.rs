//! A TCP proxy for network faults: forwards the connections it takes to an upstream
//! address, and on command cuts them (closes every connection and each new one at once)
//! or stalls them (keeps them open and forwards nothing, as a link that drops every
//! packet), then lets them through again.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// What the proxy does with its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Link {
    /// Bytes go through.
    #[default]
    Up,
    /// Every connection is closed, and each new one as soon as it is taken.
    Cut,
    /// Connections stay open and are taken, but no byte goes through.
    Stalled,
}

/// How often a waiting connection looks at the link again.
const TICK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct State {
    link: Mutex<Link>,
    changed: Condvar,
}

impl State {
    fn link(&self) -> Link {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits while the link is stalled; returns whether it is up.
    fn wait_unstalled(&self) -> bool {
        let link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        let link = self
            .changed
            .wait_while(link, |link| *link == Link::Stalled)
            .unwrap_or_else(PoisonError::into_inner);
        *link == Link::Up
    }
}

/// A proxy from `listen` to an upstream address, running until the test ends.
pub(crate) struct TcpProxy {
    state: Arc<State>,
}

impl TcpProxy {
    /// Takes connections at `listen` and forwards each to `upstream`.
    pub(crate) fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let state = Arc::clone(&shared);
                thread::spawn(move || connect(&state, client, upstream));
            }
        });
        Self { state }
    }

    /// Sets what the proxy does from now on.
    pub(crate) fn set(&self, link: Link) {
        *self
            .state
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = link;
        self.state.changed.notify_all();
    }
}

/// Forwards `client` to `upstream` both ways, as the link allows.
fn connect(state: &Arc<State>, client: TcpStream, upstream: SocketAddr) {
    if !state.wait_unstalled() {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = Arc::clone(state);
    thread::spawn(move || forward(&up, client_reader, server));
    forward(state, server_reader, client);
}

/// Copies from `from` to `to` while the link is up, holds the bytes while it is stalled,
/// and closes both when it is cut or either end closes.
fn forward(state: &State, mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        if state.link() == Link::Cut {
            break;
        }
        let read = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => break,
        };
        if !state.wait_unstalled() || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
