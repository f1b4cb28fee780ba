//! moto's server, the stand-in for AWS APIs (SSM Parameter Store for tests/tests/secrets.rs, SQS
//! for the spool's tests): `scripts/moto.sh` (a pinned moto in `.venv-moto/`, installed from
//! PyPI on first use) started on a free loopback port, in a process group of its own, and
//! stopped when the [`Moto`] drops (or killed with the thread that started it).
//!
//! moto keeps its state in memory for the life of the process and serves every client (any
//! credentials) as account 123456789012; requests must be SigV4-signed (with any secret) for
//! moto to route them to the right service, and the region is the signature's. So: one server
//! per test binary, names of each case's own, fake credentials and `us-east-1`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::workspace_root;

/// How long the first start may take: it installs moto from PyPI before the server starts.
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// moto's server in its own process group, stopped on drop (and killed with the thread that
/// started it).
pub struct Moto {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Moto {
    /// Starts the server (installing moto first if need be) and waits until it listens. The
    /// server is killed when the calling thread ends (`PR_SET_PDEATHSIG`): start it from a
    /// thread that outlives its use (the main thread, or [`SharedMoto`]'s).
    pub fn start() -> Result<Moto, String> {
        let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let out = log.reopen().map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let port = free_port();
        let mut command = Command::new("bash");
        command
            .arg(workspace_root().join("scripts/moto.sh"))
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid and prctl only change the child's own process state.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run scripts/moto.sh: {e}"))?;
        let mut moto = Moto { child, port, log };
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!(
                    "moto exited with {status} before listening:\n{}",
                    moto.log_text()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "moto did not listen on port {port}:\n{}",
            moto.log_text()
        ))
    }

    /// What the server wrote so far (its request log, and any error).
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = self.log.reopen() {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The endpoint to give a client: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: signals the process group this harness created (setsid above).
            unsafe {
                libc::killpg(group, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server for a test binary whose trials start it on first use, from libtest-mimic's
/// worker threads: it is started from a thread of its own that lives as long as the process
/// (a server started from a worker would be killed when that worker ends), and stopped by
/// [`SharedMoto::stop`] when the run ends (`process::exit` skips destructors). A run that
/// selects no trial needing it never starts it (nor installs moto).
///
/// ```text
/// static MOTO: SharedMoto = SharedMoto::new();
/// // in a trial:    let endpoint = MOTO.get().endpoint();
/// // in main, last: MOTO.stop();
/// ```
pub struct SharedMoto {
    server: Mutex<Option<Result<Arc<Moto>, String>>>,
}

impl Default for SharedMoto {
    fn default() -> Self {
        SharedMoto::new()
    }
}

impl SharedMoto {
    pub const fn new() -> SharedMoto {
        SharedMoto {
            server: Mutex::new(None),
        }
    }

    /// The server, started on first use; panics (failing the trial) with the reason if it
    /// cannot start. Never skipped.
    pub fn get(&self) -> Arc<Moto> {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let started = server.get_or_insert_with(start_kept);
        match started {
            Ok(moto) => moto.clone(),
            Err(why) => panic!("moto could not start, so this case cannot run: {why}"),
        }
    }

    /// Stops the server if it was started (once the trials holding it are done).
    pub fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(server);
    }
}

fn start_kept() -> Result<Arc<Moto>, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("moto".into())
        .spawn(move || {
            let _ = tx.send(Moto::start());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start a thread for moto: {e}"))?;
    let moto = rx.recv().map_err(|_| "the moto thread died".to_owned())??;
    Ok(Arc::new(moto))
}
