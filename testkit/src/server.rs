//! A MongoDB server for tests and the demo, provisioned without help:
//!
//! 1. `SPANREC_MONGO_URI`, if set: used as is (never started or stopped);
//! 2. else `mongod` on `PATH`, started on a free loopback port with a fresh
//!    data directory;
//! 3. else SecantusDB, a MongoDB-wire-compatible server on WiredTiger,
//!    installed with pip into the workspace's `.venv` on first use (pinned to
//!    [`SECANTUS_VERSION`]) and started the same way.
//!
//! Started servers listen on 127.0.0.1 only, accept test commands
//! (`configureFailPoint`) and are stopped, their data directory removed, when
//! the [`LocalServer`] is dropped. Failing to provision one is an error that
//! says why: a test never skips silently.
//!
//! SecantusDB is GPL-2.0: it runs only as a separate process, installed at
//! test/demo time; none of its code is part of spanrec.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The SecantusDB release known to work with the `mongodb` driver 3.x.
pub const SECANTUS_VERSION: &str = "0.7.0b3";

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why no server could be provisioned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A command needed to install or start a server failed.
    #[error("{what}: {detail}")]
    Command {
        /// What was being done.
        what: String,
        /// Its output or error.
        detail: String,
    },
    /// The server started but did not accept connections in time.
    #[error(
        "{kind} on port {port} did not accept connections within {timeout:?}; its log:\n{log}"
    )]
    NotReady {
        /// Which server.
        kind: &'static str,
        /// Its port.
        port: u16,
        /// How long we waited.
        timeout: Duration,
        /// The end of its log.
        log: String,
    },
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let what = what.into();
    move |source| ProvisionError::Io { what, source }
}

/// Which kind of server a [`LocalServer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Given by `SPANREC_MONGO_URI`; not managed.
    External,
    /// `mongod` from `PATH`.
    Mongod,
    /// SecantusDB from the project's virtualenv.
    Secantus,
}

/// A running server; stopped and cleaned up on drop (unless external).
/// Its `Debug` masks the connection string's secrets.
pub struct LocalServer {
    kind: ServerKind,
    uri: String,
    port: u16,
    child: Option<Child>,
    /// Parent of the data directory and the log; removed on drop.
    dir: Option<PathBuf>,
    program: Option<(PathBuf, Vec<String>)>,
}

impl std::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServer")
            .field("kind", &self.kind)
            .field("uri", &spanrec_mongo::RedactedUri::new(&self.uri))
            .field("port", &self.port)
            .field("managed", &self.child.is_some())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LocalServer {
    /// Finds or starts a server (see the module docs for the order).
    pub fn start() -> Result<LocalServer, ProvisionError> {
        if let Ok(uri) = std::env::var("SPANREC_MONGO_URI") {
            if !uri.trim().is_empty() {
                return Ok(LocalServer {
                    kind: ServerKind::External,
                    uri,
                    port: 0,
                    child: None,
                    dir: None,
                    program: None,
                });
            }
        }
        let dir = fresh_dir()?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
        let port = free_port()?;
        let (kind, program, args) = match which("mongod") {
            Some(mongod) => (
                ServerKind::Mongod,
                mongod,
                vec![
                    "--bind_ip".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                    "--dbpath".into(),
                    data.display().to_string(),
                    "--setParameter".into(),
                    "enableTestCommands=1".into(),
                ],
            ),
            None => (
                ServerKind::Secantus,
                secantus_python()?,
                vec![
                    "-m".into(),
                    "secantus".into(),
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                    "--storage-path".into(),
                    data.display().to_string(),
                    "--enable-test-commands".into(),
                ],
            ),
        };
        let uri = format!(
            "mongodb://127.0.0.1:{port}/?directConnection=true&heartbeatFrequencyMS=500\
             &serverSelectionTimeoutMS=2000&connectTimeoutMS=2000"
        );
        let mut server = LocalServer {
            kind,
            uri,
            port,
            child: None,
            dir: Some(dir),
            program: Some((program, args)),
        };
        server.spawn()?;
        Ok(server)
    }

    /// The connection string (no credentials for started servers).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Which kind of server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Whether tests may stop and restart it ([`kill`](Self::kill),
    /// [`restart`](Self::restart)): true for servers this process started.
    pub fn is_managed(&self) -> bool {
        self.child.is_some()
    }

    fn log_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("server.log"))
    }

    fn spawn(&mut self) -> Result<(), ProvisionError> {
        let (program, args) = self
            .program
            .clone()
            .expect("managed servers have a program");
        let log_path = self.log_path().expect("managed servers have a directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("open {}", log_path.display())))?;
        let err = log.try_clone().map_err(io("clone log handle"))?;
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("start {}", program.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), ProvisionError> {
        let begun = Instant::now();
        let addr = (Ipv4Addr::LOCALHOST, self.port);
        while begun.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ProvisionError::Command {
                        what: format!("{:?} server exited during start-up ({status})", self.kind),
                        detail: self.log_tail(),
                    });
                }
            }
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok()
                && ping(&self.uri)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(ProvisionError::NotReady {
            kind: if self.kind == ServerKind::Mongod {
                "mongod"
            } else {
                "SecantusDB"
            },
            port: self.port,
            timeout: START_TIMEOUT,
            log: self.log_tail(),
        })
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Some(path) = self.log_path() {
            if let Ok(mut f) = std::fs::File::open(path) {
                let _ = f.read_to_string(&mut text);
            }
        }
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// Kills the server at once (SIGKILL): in-flight writes are not
    /// committed. No-op for an external server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM) and waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed or terminated server again on the same port and data
    /// directory, and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), ProvisionError> {
        if self.program.is_none() {
            return Ok(());
        }
        self.kill();
        self.spawn()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.terminate();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether the server at `uri` answers a `ping`.
fn ping(uri: &str) -> bool {
    let Ok(client) = mongodb::sync::Client::with_uri_str(uri) else {
        return false;
    };
    client
        .database("admin")
        .run_command(bson::doc! { "ping": 1 })
        .run()
        .is_ok()
}

fn fresh_dir() -> Result<PathBuf, ProvisionError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "spanrec-mongo-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    Ok(dir)
}

fn free_port() -> Result<u16, ProvisionError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("bind a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("read the free port"))?
        .port())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The workspace's virtualenv: `SPANREC_VENV`, else `.venv` beside the
/// workspace's `Cargo.toml`.
fn venv_dir() -> PathBuf {
    match std::env::var_os("SPANREC_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".venv"),
    }
}

/// The virtualenv's python with SecantusDB installed, installing it first if
/// needed. A file lock keeps parallel test processes from installing twice.
fn secantus_python() -> Result<PathBuf, ProvisionError> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!(".secantus-{SECANTUS_VERSION}"));
    if marker.is_file() && python.is_file() {
        return Ok(python);
    }
    let parent = venv.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    let lock_path = parent.join(".venv.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(io(format!("create {}", lock_path.display())))?;
    lock.lock().map_err(io("lock the virtualenv"))?;
    if marker.is_file() && python.is_file() {
        return Ok(python);
    }
    if !python.is_file() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "create the virtualenv (python3 -m venv)",
        )?;
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("SecantusDB=={SECANTUS_VERSION}")),
        &format!(
            "pip install SecantusDB=={SECANTUS_VERSION} into {}",
            venv.display()
        ),
    )?;
    std::fs::write(&marker, b"").map_err(io(format!("write {}", marker.display())))?;
    Ok(python)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ProvisionError> {
    let out = cmd.output().map_err(|e| ProvisionError::Command {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ProvisionError::Command {
        what: what.into(),
        detail: format!(
            "{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}
