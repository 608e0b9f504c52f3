//! Serve any [`SmartCard`] to a real pcscd through vsmartcard's vpcd
//! driver, so PC/SC programs (this crate's [`crate::pcsc`], `pcsc_scan`,
//! other CAP tools) see a virtual card in a "Virtual PCD 00 0x" reader.
//!
//! The driver inside pcscd listens on TCP, one port per reader slot (35963
//! for "Virtual PCD 00 00", 35964 for "00 01"); the card connects to it.
//! Both directions send frames: a big-endian `u16` length, then that many
//! bytes. From the driver, a 1-byte frame is a control message (`00` power
//! off, `01` power on, `02` reset, `04` "send your ATR", answered with a
//! frame holding the ATR); a longer frame is a command APDU, answered with
//! one frame (data ‖ SW1 SW2). pcscd asks for the ATR all the time to see
//! whether the card is still there; a closed connection (or an empty frame,
//! which is therefore never sent) means the card was pulled out.
//!
//! The vpcd listener accepts connections from anywhere on the network by
//! default: keep vsmartcard-vpcd off machines where that matters.
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::transport::SmartCard;
use crate::virtual_card::masked_hex;

/// The port of vpcd's first reader slot ("Virtual PCD 00 00"); slot n
/// listens on this port + n.
pub const VPCD_DEFAULT_PORT: u16 = 35963;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lasted this long was a real session: retry quickly.
const STABLE: Duration = Duration::from_secs(1);

struct Control {
    stop: bool,
    inserted: bool,
    /// The live connection, for `eject`/`stop` to cut.
    socket: Option<TcpStream>,
}

struct Shared {
    control: Mutex<Control>,
    wake: Condvar,
    connected: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Controls a card served to vpcd. Dropping it stops serving (the card
/// leaves the reader).
pub struct VpcdHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Serve `card` to the vpcd slot listening at `addr` (e.g.
/// `127.0.0.1:35963`) from a background thread, reconnecting with backoff
/// while the slot is unreachable.
pub fn serve(addr: SocketAddr, card: Box<dyn SmartCard>) -> VpcdHandle {
    let shared = Arc::new(Shared {
        control: Mutex::new(Control {
            stop: false,
            inserted: true,
            socket: None,
        }),
        wake: Condvar::new(),
        connected: AtomicBool::new(false),
    });
    let for_thread = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(format!("vpcd-card-{}", addr.port()))
        .spawn(move || run(addr, card, &for_thread));
    let thread = match thread {
        Ok(thread) => Some(thread),
        Err(error) => {
            tracing::error!(%addr, %error, "could not start the vpcd card thread");
            None
        }
    };
    VpcdHandle {
        addr,
        shared,
        thread,
    }
}

impl VpcdHandle {
    /// The vpcd slot address this card is served to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Pull the card out: the connection closes and stays closed until
    /// [`VpcdHandle::insert`]. A PC/SC session in progress fails.
    pub fn eject(&self) {
        let mut control = self.shared.lock();
        control.inserted = false;
        if let Some(socket) = &control.socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.shared.wake.notify_all();
    }

    /// Put the card (back) in: connect to the slot again.
    pub fn insert(&self) {
        self.shared.lock().inserted = true;
        self.shared.wake.notify_all();
    }

    /// Whether the card is connected to vpcd right now (pcscd notices a new
    /// connection at its next poll, a fraction of a second later).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Wait until connected, at most `timeout`.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_connected() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stop serving and wait for the thread to end. Idempotent.
    pub fn stop(&mut self) {
        {
            let mut control = self.shared.lock();
            control.stop = true;
            if let Some(socket) = &control.socket {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(addr = %self.addr, "the vpcd card thread panicked");
        }
    }
}

impl Drop for VpcdHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for VpcdHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpcdHandle")
            .field("addr", &self.addr)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// How a connection ended.
enum Ended {
    /// The card asked to leave ([`SmartCard::process`] returned `None`).
    Removed,
    /// The socket failed or was closed (by vpcd, or by eject/stop).
    Closed(io::Error),
}

fn run(addr: SocketAddr, mut card: Box<dyn SmartCard>, shared: &Shared) {
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    loop {
        {
            let mut control = shared.lock();
            while !control.stop && !control.inserted {
                control = shared.wake.wait(control).unwrap_or_else(|p| p.into_inner());
            }
            if control.stop {
                return;
            }
        }
        let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => stream,
            Err(error) => {
                if warned {
                    tracing::debug!(%addr, %error, "vpcd still unreachable");
                } else {
                    tracing::warn!(%addr, %error, "cannot reach vpcd (is pcscd with vsmartcard-vpcd running?); retrying");
                    warned = true;
                }
                if sleep_unless_stopped(shared, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        warned = false;
        // Small frames both ways: send each at once.
        let _ = stream.set_nodelay(true);
        {
            let mut control = shared.lock();
            if control.stop || !control.inserted {
                let _ = stream.shutdown(Shutdown::Both);
                if control.stop {
                    return;
                }
                continue;
            }
            control.socket = stream.try_clone().ok();
        }
        shared.connected.store(true, Ordering::Release);
        tracing::debug!(%addr, "card connected to vpcd");
        let started = Instant::now();
        let ended = serve_connection(&stream, card.as_mut());
        shared.connected.store(false, Ordering::Release);
        let _ = stream.shutdown(Shutdown::Both);
        // Out of the reader, the card has no power: its session is gone.
        card.reset();
        let stop = {
            let mut control = shared.lock();
            control.socket = None;
            if matches!(ended, Ended::Removed) {
                control.inserted = false;
            }
            control.stop
        };
        if stop {
            return;
        }
        match ended {
            Ended::Removed => tracing::debug!(%addr, "card removed itself from vpcd"),
            Ended::Closed(error) => tracing::debug!(%addr, %error, "vpcd connection ended"),
        }
        if started.elapsed() >= STABLE {
            backoff = MIN_BACKOFF;
        } else {
            // Closed at once (the slot is taken, say): do not spin.
            if sleep_unless_stopped(shared, backoff) {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Sleep `pause` unless stopped first; true when stopped.
fn sleep_unless_stopped(shared: &Shared, pause: Duration) -> bool {
    let deadline = Instant::now() + pause;
    let mut control = shared.lock();
    while !control.stop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        control = shared
            .wake
            .wait_timeout(control, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    true
}

fn serve_connection(stream: &TcpStream, card: &mut dyn SmartCard) -> Ended {
    let mut reader = stream;
    let mut writer = stream;
    serve_frames(&mut reader, &mut writer, || quick_ack(stream), card)
}

/// The card side of the vpcd protocol on any byte stream: answers each
/// frame until the stream ends or fails (the error) or the card leaves
/// (`Ok`). [`serve`] runs it on vpcd's socket; the bytes come from pcscd's
/// driver, not from us, so the fuzzer feeds it too.
pub fn serve_stream(
    reader: &mut impl Read,
    writer: &mut impl Write,
    card: &mut dyn SmartCard,
) -> io::Result<()> {
    match serve_frames(reader, writer, || {}, card) {
        Ended::Removed => Ok(()),
        Ended::Closed(error) => Err(error),
    }
}

fn serve_frames(
    reader: &mut impl Read,
    writer: &mut impl Write,
    mut before_read: impl FnMut(),
    card: &mut dyn SmartCard,
) -> Ended {
    loop {
        before_read();
        let message = match read_frame(reader) {
            Ok(message) => message,
            Err(error) => return Ended::Closed(error),
        };
        let answer = match message.as_slice() {
            [] => {
                tracing::debug!("vpcd sent an empty frame; ignored");
                continue;
            }
            // Power off, power on, reset: the card starts afresh.
            [0x00] | [0x01] | [0x02] => {
                card.reset();
                continue;
            }
            [0x04] => {
                let atr = card.atr();
                if atr.is_empty() {
                    tracing::error!("the served card has no ATR; leaving the reader");
                    return Ended::Removed;
                }
                atr
            }
            [other] => {
                tracing::debug!(control = other, "unknown vpcd control message; ignored");
                continue;
            }
            capdu => match card.process(capdu) {
                Some(rapdu) if (2..=0xFFFF).contains(&rapdu.len()) => {
                    tracing::trace!(command = %masked_hex(capdu), sw = %hex::encode_upper(&rapdu[rapdu.len() - 2..]), "vpcd APDU");
                    rapdu
                }
                Some(rapdu) => {
                    // An empty frame would make vpcd drop the card.
                    tracing::warn!(
                        len = rapdu.len(),
                        "the served card gave an unusable answer; sending 6F00"
                    );
                    vec![0x6F, 0x00]
                }
                None => return Ended::Removed,
            },
        };
        if let Err(error) = write_frame(writer, &answer) {
            return Ended::Closed(error);
        }
    }
}

/// Acknowledge vpcd's segments at once. vpcd writes a frame's length and its
/// payload in two sends with Nagle's algorithm on, so the payload waits for
/// our ACK of the length; a delayed ACK (40 ms on Linux) would add that much
/// to every APDU. Quick-ACK mode is not sticky: set it before every read.
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

fn read_frame(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    reader.read_exact(&mut len)?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    reader.read_exact(&mut message)?;
    Ok(message)
}

/// One frame, in one write so it leaves as one segment.
fn write_frame(writer: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "vpcd frames hold 1 to 65535 bytes",
            )
        })?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    writer.write_all(&frame)?;
    writer.flush()
}

static PROCESS_SLOTS: Mutex<()> = Mutex::new(());
/// Bound while the vpcd slots are in use, so test processes on one machine
/// take turns (the slots are machine-wide). Nothing is sent to it.
const SLOTS_LOCK_PORT: u16 = 35960;

/// Exclusive use of this machine's vpcd slots, for tests: serialises
/// threads of this process (a mutex) and processes on this machine (a
/// loopback UDP port only one process can bind). Released on drop, also when
/// the holder panics or dies.
pub struct SlotsLock {
    _port: UdpSocket,
    _thread: MutexGuard<'static, ()>,
}

impl SlotsLock {
    /// For tests that need pcscd's vpcd reader: the slots, empty and ours;
    /// or `None` (the test should return) when pcscd or its vpcd reader is
    /// missing and nothing requires them. With `CI` or
    /// `BANKBRIDGE_TEST_PCSCD` set, a missing pcscd panics instead
    /// (`scripts/pcscd.sh start` runs one). Feature `test-support`.
    #[cfg(feature = "test-support")]
    pub fn for_tests() -> Option<SlotsLock> {
        const WAIT: Duration = Duration::from_secs(10);
        let lock = SlotsLock::acquire(Duration::from_secs(300)).expect("vpcd slots lock");
        let why = match crate::transport::Readers::list(&crate::pcsc::PcscReaders::new()) {
            Ok(list) if list.iter().any(|r| r.name.contains("Virtual PCD")) => {
                // A card a previous test served may not be noticed gone yet.
                crate::pcsc::wait_for_removal("Virtual PCD", WAIT).expect("vpcd slots free");
                return Some(lock);
            }
            Ok(list) => format!(
                "pcscd has no vpcd reader (readers: {:?})",
                list.iter().map(|r| &r.name).collect::<Vec<_>>()
            ),
            Err(e) => e.to_string(),
        };
        let required = ["BANKBRIDGE_TEST_PCSCD", "CI"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        assert!(
            !required,
            "pcscd with vsmartcard-vpcd is required here (CI or BANKBRIDGE_TEST_PCSCD is set): {why}. Start it with scripts/pcscd.sh start"
        );
        eprintln!("skipping: {why} (scripts/pcscd.sh start runs pcscd with vpcd)");
        None
    }

    /// Wait up to `timeout` for the slots.
    pub fn acquire(timeout: Duration) -> io::Result<SlotsLock> {
        let deadline = Instant::now() + timeout;
        // A test that panicked while holding the lock poisons it: harmless.
        let thread = PROCESS_SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match UdpSocket::bind(("127.0.0.1", SLOTS_LOCK_PORT)) {
                Ok(port) => {
                    return Ok(SlotsLock {
                        _port: port,
                        _thread: thread,
                    });
                }
                Err(error)
                    if error.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!(
                            "vpcd slots still in use by another process after {timeout:?} (lock port 127.0.0.1:{SLOTS_LOCK_PORT}): {error}"
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtual_card::{Profile, VirtualCard};
    use std::net::TcpListener;

    /// A stand-in for vpcd: listen, accept the card, then drive it.
    fn fake_vpcd() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    fn accept(listener: &TcpListener) -> TcpStream {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    fn exchange(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
        write_frame(stream, payload).unwrap();
        read_frame(stream).unwrap()
    }

    #[test]
    fn frames_roundtrip_and_refuse_empty() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &[0x3B, 0x00]).unwrap();
        assert_eq!(buffer, [0x00, 0x02, 0x3B, 0x00]);
        assert_eq!(read_frame(&mut buffer.as_slice()).unwrap(), [0x3B, 0x00]);
        assert!(write_frame(&mut Vec::new(), &[]).is_err());
        assert!(read_frame(&mut [0x00, 0x05, 0x01].as_slice()).is_err());
    }

    #[test]
    fn serves_atr_apdus_and_resets() {
        let (listener, addr) = fake_vpcd();
        let card = VirtualCard::with_pin(Profile::CapT1, "1234").unwrap();
        let handle = card.handle();
        let mut vpcd = serve(addr, Box::new(card));
        let mut stream = accept(&listener);
        assert!(vpcd.wait_connected(Duration::from_secs(5)));
        assert_eq!(exchange(&mut stream, &[0x04]), Profile::CapT1.atr());
        write_frame(&mut stream, &[0x01]).unwrap(); // power on: no answer
        let session = {
            // The ATR request after it proves the power-on was handled.
            exchange(&mut stream, &[0x04]);
            handle.session()
        };
        let fci = exchange(
            &mut stream,
            &hex::decode("00A4040007A000000004800200").unwrap(),
        );
        assert_eq!(&fci[fci.len() - 2..], [0x90, 0x00]);
        write_frame(&mut stream, &[0x02]).unwrap();
        exchange(&mut stream, &[0x04]);
        assert_eq!(handle.session(), session + 1);
        // Nothing selected after the reset.
        assert_eq!(
            exchange(&mut stream, &hex::decode("80CA9F1700").unwrap()),
            [0x69, 0x85]
        );
        vpcd.stop();
        assert!(!vpcd.is_connected());
        // The card closed its side.
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
    }

    #[test]
    fn eject_insert_and_self_removal() {
        let (listener, addr) = fake_vpcd();
        let card = VirtualCard::with_pin(Profile::CapBe, "1234").unwrap();
        let handle = card.handle();
        let vpcd = serve(addr, Box::new(card));
        let mut stream = accept(&listener);
        assert_eq!(exchange(&mut stream, &[0x04]), Profile::CapBe.atr());
        vpcd.eject();
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
        // Out: no new connection until inserted.
        listener.set_nonblocking(true).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(listener.accept().is_err());
        listener.set_nonblocking(false).unwrap();
        vpcd.insert();
        let mut stream = accept(&listener);
        assert_eq!(exchange(&mut stream, &[0x04]), Profile::CapBe.atr());
        // The card pulls itself out after one more APDU.
        handle.set_remove_after(Some(1));
        let select = hex::decode("00A4040007A0000000048002").unwrap();
        assert_eq!(exchange(&mut stream, &select), [0x61, 0x30]);
        write_frame(&mut stream, &select).unwrap();
        assert!(read_frame(&mut stream).is_err());
        listener.set_nonblocking(true).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            listener.accept().is_err(),
            "stays out after removing itself"
        );
        listener.set_nonblocking(false).unwrap();
        vpcd.insert();
        let mut stream = accept(&listener);
        assert_eq!(exchange(&mut stream, &select), [0x61, 0x30]);
    }

    #[test]
    fn reconnects_when_vpcd_drops_the_connection() {
        let (listener, addr) = fake_vpcd();
        let card = VirtualCard::with_pin(Profile::VisaDpa, "1234").unwrap();
        let _vpcd = serve(addr, Box::new(card));
        let stream = accept(&listener);
        drop(stream);
        let mut stream = accept(&listener);
        assert_eq!(exchange(&mut stream, &[0x04]), Profile::VisaDpa.atr());
        // Unknown control bytes and empty frames are ignored.
        write_frame(&mut stream, &[0x09]).unwrap();
        stream.write_all(&[0, 0]).unwrap();
        assert_eq!(exchange(&mut stream, &[0x04]), Profile::VisaDpa.atr());
    }

    #[test]
    fn retries_until_the_slot_listens_and_stops_while_waiting() {
        // A free port nobody listens on yet.
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let card = VirtualCard::with_pin(Profile::CapBe, "1234").unwrap();
        let mut vpcd = serve(addr, Box::new(card));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!vpcd.is_connected());
        let listener = TcpListener::bind(addr).unwrap();
        let mut stream = accept(&listener);
        assert_eq!(exchange(&mut stream, &[0x04]), Profile::CapBe.atr());
        let started = Instant::now();
        vpcd.stop();
        assert!(started.elapsed() < Duration::from_secs(2));
        vpcd.stop(); // idempotent
    }

    #[test]
    fn slots_lock_is_exclusive_within_the_process() {
        let lock = SlotsLock::acquire(Duration::from_secs(30)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = SlotsLock::acquire(Duration::from_secs(30)).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(lock);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }
}
