//! moto_server, the local AWS: found in the project's virtualenv, started on 127.0.0.1.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A running moto_server, stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// The moto_server command: `STEDI_MOTO_SERVER` (an executable taking moto_server's
/// arguments), else the project's launcher `infra/moto_server.py` (moto_server with
/// GetBucketVersioning answered as S3 does) run by `<root>/.venv/bin/python`.
pub fn command(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    match std::env::var_os("STEDI_MOTO_SERVER") {
        Some(bin) => (PathBuf::from(bin), Vec::new()),
        None => (
            root.join(".venv/bin/python"),
            vec![root.join("infra/moto_server.py")],
        ),
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Moto {
    /// Starts moto_server on `port` (a free one when `None`) and waits until it answers.
    pub fn start(root: &Path, port: Option<u16>, log: Option<&Path>) -> Result<Moto> {
        let (bin, launcher) = command(root);
        if !bin.exists() {
            bail!(
                "{} not found: run `make setup` (installs moto into .venv)",
                bin.display()
            );
        }
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let stdout = match log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        };
        let child = Command::new(&bin)
            .args(&launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(stdout)
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        wait_until_up(port, Duration::from_secs(30))?;
        Ok(moto)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Leaves the server running after this handle is gone (for `stedi up`).
    pub fn detach(self) -> u32 {
        let pid = self.child.id();
        std::mem::forget(self);
        pid
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_until_up(port: u16, timeout: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("moto_server did not start on port {port} within {timeout:?}")
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
