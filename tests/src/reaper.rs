//! Tears the control plane down when the test binary exits, however it exits.
//!
//! Rust never drops statics, and a panicking or killed test binary runs no cleanup code. So the
//! harness starts a small shell, the reaper, whose stdin is a pipe from the test binary. When
//! the test binary ends (normally, after a panic, or killed), the kernel closes the pipe; the
//! reaper reads end-of-file and runs the cleanup commands it was given: stopping process groups
//! and removing temporary folders.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

use crate::HarnessError;

/// Handle to the reaper. Cleanup steps are sent as shell lines and queued until exit.
#[derive(Debug)]
pub struct Reaper {
    stdin: Mutex<ChildStdin>,
}

/// The reaper script: collect cleanup lines until end-of-file, then run them in reverse order
/// (last started, first stopped). It ignores the signals a Ctrl-C or a CI timeout sends to the
/// foreground process group, so it outlives the test binary it cleans up after.
const SCRIPT: &str = r#"
trap '' INT TERM HUP
steps=()
while IFS= read -r line; do steps+=("$line"); done
for ((i=${#steps[@]}-1; i>=0; i--)); do eval "${steps[$i]}" >/dev/null 2>&1; done
"#;

impl Reaper {
    /// Starts the reaper in a process group of its own.
    pub fn start() -> Result<Self, HarnessError> {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::Start(format!("cannot start the reaper (bash): {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| HarnessError::Start("reaper has no stdin".into()))?;
        Ok(Self {
            stdin: Mutex::new(stdin),
        })
    }

    /// Queues one shell line to run at exit.
    pub fn at_exit(&self, line: &str) -> Result<(), HarnessError> {
        let mut stdin = self
            .stdin
            .lock()
            .map_err(|_| HarnessError::Start("reaper lock poisoned".into()))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| HarnessError::Start(format!("cannot talk to the reaper: {e}")))
    }

    /// At exit, stops the process group `pgid`: SIGTERM, then SIGKILL for whatever is left.
    pub fn stop_group(&self, pgid: u32) -> Result<(), HarnessError> {
        self.at_exit(&format!(
            "kill -TERM -- -{pgid}; for _ in $(seq 50); do kill -0 -- -{pgid} || break; sleep 0.1; done; kill -KILL -- -{pgid}"
        ))
    }

    /// At exit, removes `path` and everything under it.
    pub fn remove_dir(&self, path: &std::path::Path) -> Result<(), HarnessError> {
        self.at_exit(&format!("rm -rf {}", shell_quote(&path.to_string_lossy())))
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'\''"#))
}
