//! Runs at once, each in its own child process: up to `jobs` `shoal-sim child FILE --seed N`
//! processes of the same binary, started in the pool's directory. No simulation runs here and no
//! thread is started: each simulation stays alone and single-threaded in its process, the parent
//! only starts children and collects their result lines (stdout and stderr go to files in the
//! directory, so a child never blocks on a full pipe), polling for the next one that exits.
//!
//! A run's result does not depend on the pool: the same file name, seed and binary give the same
//! run whatever else runs beside it (the file is named relative to the directory, so the trace,
//! which names the file, does not depend on where the directory is).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus};
use std::time::Duration;

use super::driver::{CaseRun, RESULT_MARK};

/// How often the pool looks for a child that exited (it sleeps in between; it never reads a clock).
const POLL: Duration = Duration::from_millis(5);

struct Running {
    key: u32,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// Child processes playing scenario files, at most `jobs` at once.
pub struct Pool {
    exe: PathBuf,
    dir: PathBuf,
    jobs: usize,
    wall_limit: Option<u64>,
    running: Vec<Running>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<u32> = self.running.iter().map(|r| r.key).collect();
        f.debug_struct("Pool").field("jobs", &self.jobs).field("running", &keys).finish()
    }
}

impl Pool {
    /// A pool of `jobs` (at least 1) children of `exe`, working in `dir`; with `wall_limit`, a
    /// child gives up after that many seconds of wall-clock time (a hang, reported as a crash).
    pub fn new(exe: &Path, dir: &Path, jobs: usize, wall_limit: Option<u64>) -> Pool {
        Pool { exe: exe.to_path_buf(), dir: dir.to_path_buf(), jobs: jobs.max(1), wall_limit, running: Vec::new() }
    }

    pub fn is_full(&self) -> bool {
        self.running.len() >= self.jobs
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Start playing `file` (a name inside the pool's directory) with `seed`; `key` names the run
    /// in [`Pool::wait_any`]'s answer.
    pub fn start(&mut self, key: u32, file: &str, seed: u64) -> std::io::Result<()> {
        let out = self.dir.join(format!("{file}.stdout"));
        let err = self.dir.join(format!("{file}.stderr"));
        let mut process = Process::new(&self.exe);
        process.current_dir(&self.dir).arg("child").arg(file).arg("--seed").arg(seed.to_string());
        if let Some(secs) = self.wall_limit {
            process.arg("--wall-limit").arg(secs.to_string());
        }
        process.stdin(std::process::Stdio::null()).stdout(File::create(&out)?).stderr(File::create(&err)?);
        let child = process.spawn()?;
        self.running.push(Running { key, child, out, err });
        Ok(())
    }

    /// Wait until a run ends and say how it went; `None` when nothing runs.
    pub fn wait_any(&mut self) -> Option<(u32, CaseRun)> {
        loop {
            if self.running.is_empty() {
                return None;
            }
            for i in 0..self.running.len() {
                let status = match self.running[i].child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) => Ok(status),
                    Err(err) => Err(err),
                };
                let mut done = self.running.remove(i);
                let run = match status {
                    Ok(status) => {
                        let stdout = std::fs::read(&done.out).unwrap_or_default();
                        let stderr = std::fs::read(&done.err).unwrap_or_default();
                        parse_output(&String::from_utf8_lossy(&stdout), &String::from_utf8_lossy(&stderr), status)
                    }
                    Err(err) => {
                        let _ = done.child.kill();
                        let _ = done.child.wait();
                        CaseRun::error(format!("could not wait for the run: {err}"))
                    }
                };
                let _ = std::fs::remove_file(&done.out);
                let _ = std::fs::remove_file(&done.err);
                return Some((done.key, run));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stop (kill) every run whose key `keep` refuses; their results are never reported.
    pub fn cancel(&mut self, keep: impl Fn(u32) -> bool) {
        let (kept, cancelled): (Vec<Running>, Vec<Running>) = self.running.drain(..).partition(|r| keep(r.key));
        self.running = kept;
        for mut run in cancelled {
            let _ = run.child.kill();
            let _ = run.child.wait();
            let _ = std::fs::remove_file(&run.out);
            let _ = std::fs::remove_file(&run.err);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.cancel(|_| false);
    }
}

/// What a `shoal-sim child` process reported: its result line, or (none printed) an error with
/// the end of its stderr.
pub fn parse_output(stdout: &str, stderr: &str, status: ExitStatus) -> CaseRun {
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_MARK));
    match line.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(value)) => CaseRun {
            result: value["result"].as_str().unwrap_or("ERROR").to_string(),
            exit_code: value["exit_code"].as_i64().unwrap_or(2) as i32,
            detail: value["detail"].as_str().unwrap_or_default().to_string(),
            virtual_ms: value["virtual_ms"].as_u64().unwrap_or(0),
            trace_hash: value["trace_hash"].as_str().unwrap_or_default().to_string(),
            wall_ms: value["wall_ms"].as_u64().unwrap_or(0),
        },
        _ => {
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let code = status.code().filter(|c| *c == 1).unwrap_or(2);
            CaseRun {
                exit_code: code,
                ..CaseRun::error(format!("the run died ({status}) without a result: {}", tail.join(" / ")))
            }
        }
    }
}
