//! Services as real child processes, for tests whose fault is a process fault (SIGKILL,
//! SIGTERM) or that need the services as separate processes.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::common::deadline;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The picture service binary, built next to this test (`cargo build --workspace --bins`).
pub(crate) fn pps_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("primary-picture-service");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A service running as a child process; killed if the test ends early.
pub(crate) struct Process {
    pub child: Child,
}

impl Process {
    pub(crate) fn spawn(bin: &Path, args: &[String]) -> Process {
        Self::spawn_with_env(bin, args, &[])
    }

    pub(crate) fn spawn_with_env(bin: &Path, args: &[String], env: &[(&str, &str)]) -> Process {
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            // Logs go to stdout: shown when CLUSTER_LOG (a RUST_LOG filter) asks for them.
            .stdout(if std::env::var_os("CLUSTER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Process { child }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub(crate) async fn wait(&mut self) -> bool {
        let deadline = deadline();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn wait_healthy(http: &str) {
    let deadline = deadline();
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(format!("{http}/healthz")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{http} did not become healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn start_pps(port: u16, data_dir: &Path, extra: &[&str]) -> Process {
    start_pps_with_env(port, data_dir, extra, &[])
}

pub(crate) fn start_pps_with_env(
    port: u16,
    data_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".to_string(),
        data_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::spawn_with_env(&pps_binary(), &args, env)
}
