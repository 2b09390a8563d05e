//! A dynalite of a test's own, so stopping it disturbs nobody else.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A dynalite of this test's own, so stopping it disturbs nobody else.
pub struct OwnDynalite {
    child: Option<Child>,
    port: u16,
    cli: std::path::PathBuf,
}

impl OwnDynalite {
    pub fn find_cli() -> Option<std::path::PathBuf> {
        // Where `make testenv` installs it (e2e/testenv/lib/common.sh: PRAPI_CACHE_DIR).
        let cache = match std::env::var_os("PRAPI_CACHE_DIR") {
            Some(dir) => std::path::PathBuf::from(dir),
            None => std::path::Path::new(&std::env::var_os("HOME")?).join(".cache/prapi"),
        };
        let mut dirs: Vec<_> = std::fs::read_dir(&cache)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dynalite-"))
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .map(|d| d.join("node_modules/dynalite/cli.js"))
            .find(|p| p.exists())
    }

    pub fn start(cli: std::path::PathBuf, port: u16) -> OwnDynalite {
        let mut d = OwnDynalite {
            child: None,
            port,
            cli,
        };
        d.restart();
        d
    }

    pub fn restart(&mut self) {
        let child = Command::new("node")
            .arg(&self.cli)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dynalite");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dynalite did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnDynalite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
