//! One driver for command-line runs: `tokenhub-admin` in the admin tests
//! (`tests/admin_support`) and in the end-to-end harness
//! (`integration/src/admin.rs`), each with its own store and environment.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

/// One run: its arguments, exit status and output.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (the CLI was run with `--json`); panics otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{:?}: stdout is not JSON ({e}): {}", self.args, self.stdout))
    }

    /// Panics with everything the CLI said unless it exited 0.
    pub fn ok(self) -> Run {
        self.fails(0)
    }

    /// Panics with everything the CLI said unless it exited with `code`.
    pub fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{:?} ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `command` (whose arguments end with `args`, named in messages)
/// with `stdin` fed to it, or none, and captures stdout and stderr.
pub fn run(mut command: Command, args: &[&str], stdin: Option<&[u8]>) -> Run {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {program}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).unwrap_or_else(|e| panic!("writing {program}'s stdin: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {program}: {e}"));
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
