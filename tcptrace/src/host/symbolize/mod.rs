//! User stacks to function names (and <file:line> where debug info exists).
//!
//! Symbolizing opens files that the traced processes choose (their binaries,
//! debug links, perf maps), so it runs in a process of its own ([`worker`])
//! that is asked one process's addresses at a time, under a deadline. When
//! it overruns (an open that blocks) or dies (SIGBUS), it is killed and
//! replaced, and that process's frames are reported as skipped, with why.
//! The stack model and its corrections (splice, truncation) are
//! `crate::model::stack`'s.

use std::{
    collections::HashMap,
    ffi::OsString,
    io::{self, Read as _, Write as _},
    os::fd::AsFd as _,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::model::stack::{Frame, Skipped, Stack, is_truncated, splice};

pub mod perfmap;
pub mod preflight;
mod resolve;
pub mod worker;

/// Requests made once a signal ends the run share this much time, so that the
/// final report is not held up by a process that blocks the symbolizer.
const STOP_BUDGET: Duration = Duration::from_millis(800);
/// A symbolizer process is replaced after this long: that bounds blazesym's
/// caches (they grow with every new binary it reads) and the deleted
/// binaries they hold open. The cost is one exec and re-reading the debug
/// info of the binaries still leaking, once a minute at most.
const WORKER_LIFETIME: Duration = Duration::from_mins(1);
/// How often a wait for the symbolizer looks at the stop flag.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Processes remembered as not to be asked about again.
const QUARANTINE_MAX: usize = 4096;

/// A running symbolizer process.
struct Worker {
    /// Taken by `drop`.
    child: Option<Child>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    buf: Vec<u8>,
    born: Instant,
}

impl Worker {
    fn spawn(program: &[OsString]) -> io::Result<Self> {
        let (exe, args) = program.split_first().ok_or(io::ErrorKind::InvalidInput)?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        Ok(Self {
            child: Some(child),
            stdin,
            stdout,
            buf: Vec::new(),
            born: Instant::now(),
        })
    }

    /// One request, answered before `deadline`. Once `stopping` is set,
    /// the wait also ends with the stop budget (`budget_end`, started by
    /// whichever request first sees the stop): an answer that comes within
    /// it is still used, which the final report then reuses.
    fn ask(
        &mut self,
        req: &worker::Request,
        mut deadline: Instant,
        stopping: &AtomicBool,
        budget_end: &mut Option<Instant>,
    ) -> Result<worker::Response, Skipped> {
        let mut line = serde_json::to_vec(req).map_err(|_| Skipped::Failed)?;
        line.push(b'\n');
        self.stdin.write_all(&line).map_err(|_| Skipped::Failed)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let resp = serde_json::from_slice::<worker::Response>(&self.buf[..end]);
                self.buf.drain(..=end);
                return resp.map_err(|_| Skipped::Failed);
            }
            let now = Instant::now();
            let mut budget = None;
            if stopping.load(Ordering::Relaxed) {
                let end = *budget_end.get_or_insert(now + STOP_BUDGET);
                deadline = deadline.min(end);
                budget = Some(end);
            }
            if now >= deadline {
                return Err(if budget == Some(deadline) {
                    Skipped::Interrupted
                } else {
                    Skipped::TimedOut
                });
            }
            let slice = (deadline - now).min(WAIT_SLICE);
            let ms = u16::try_from(slice.as_millis()).unwrap_or(u16::MAX).max(1);
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => return Err(Skipped::Failed),
            }
            match self.stdout.read(&mut chunk) {
                Ok(0) | Err(_) => return Err(Skipped::Failed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl Drop for Worker {
    /// Kill it; reap it on a thread of its own if it does not die at once
    /// (a task in uninterruptible sleep dies when the sleep ends).
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = std::thread::Builder::new()
                .name("symbolizer-reaper".into())
                .spawn(move || child.wait());
        }
    }
}

/// Whether process `pid` still exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Symbolizes addresses of live processes through the symbolizer process,
/// caching per (pid, address) until [`Symbols::clear`].
pub struct Symbols {
    program: Vec<OsString>,
    worker: Option<Worker>,
    timeout: Duration,
    stopping: Arc<AtomicBool>,
    /// When the requests made while stopping must be done.
    stop_budget_end: Option<Instant>,
    cache: HashMap<(u32, u64), Frame>,
    /// Processes whose symbolization overran or crashed: not asked again
    /// while they live.
    quarantined: HashMap<u32, Skipped>,
    /// Perf map lines that did not parse, over the run.
    pub perf_map_bad_lines: u64,
}

impl Symbols {
    /// Each process's addresses must be symbolized within `timeout`;
    /// `stopping` is set when the run is ending.
    #[must_use]
    pub fn new(timeout: Duration, stopping: Arc<AtomicBool>) -> Self {
        Self::with_program(
            vec![
                OsString::from("/proc/self/exe"),
                OsString::from(worker::ARG),
            ],
            timeout,
            stopping,
        )
    }

    /// With `program` (and its arguments) as the symbolizer process.
    #[must_use]
    pub fn with_program(
        program: Vec<OsString>,
        timeout: Duration,
        stopping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            program,
            worker: None,
            timeout,
            stopping,
            stop_budget_end: None,
            cache: HashMap::new(),
            quarantined: HashMap::new(),
            perf_map_bad_lines: 0,
        }
    }

    /// Start a new report: forget cached addresses (processes come and go,
    /// addresses are reused) and exited processes, and replace an old
    /// symbolizer process. Once a signal ends the run, the final report
    /// keeps what the last one resolved for processes still alive: its
    /// short budget would otherwise leave those frames `interrupted`.
    pub fn clear(&mut self) {
        if self.stopping.load(Ordering::Relaxed) {
            self.cache
                .retain(|(pid, _), f| f.skipped != Some(Skipped::Interrupted) && alive(*pid));
        } else {
            self.cache.clear();
        }
        self.quarantined.retain(|pid, _| alive(*pid));
        if self
            .worker
            .as_ref()
            .is_some_and(|w| w.born.elapsed() > WORKER_LIFETIME)
        {
            self.worker = None;
        }
    }

    /// Ask the symbolizer process about `addrs` of `pid`.
    fn ask(&mut self, pid: u32, addrs: &[u64]) -> Result<Vec<Frame>, Skipped> {
        let now = Instant::now();
        let deadline = now
            .checked_add(self.timeout)
            .or_else(|| now.checked_add(Duration::from_hours(1)))
            .unwrap_or(now);
        // Once the stop budget is spent, no symbolizer process is started
        // for an answer that could not come in time.
        if self.stop_budget_end.is_some_and(|end| now >= end) {
            return Err(Skipped::Interrupted);
        }
        if self.worker.is_none() {
            let w = Worker::spawn(&self.program).map_err(|e| {
                log::warn!("starting the symbolizer process: {e}");
                Skipped::Failed
            })?;
            self.worker = Some(w);
        }
        let w = self.worker.as_mut().ok_or(Skipped::Failed)?;
        let req = worker::Request {
            pid,
            addrs: addrs.to_vec(),
        };
        match w.ask(&req, deadline, &self.stopping, &mut self.stop_budget_end) {
            Ok(r) if r.frames.len() == addrs.len() => {
                self.perf_map_bad_lines += r.perf_map_bad_lines;
                Ok(r.frames)
            }
            Ok(_) => Err(Skipped::Failed),
            Err(why) => Err(why),
        }
    }

    /// Start a report again: forget what was resolved (a perf map was
    /// just rewritten) and give the requests made while stopping a budget
    /// of their own.
    pub fn restart(&mut self) {
        self.clear();
        self.cache.clear();
        self.stop_budget_end = None;
    }

    /// Resolve `addrs` in process `pid`. Addresses that cannot be resolved
    /// (the process exited, no symbols) come back with `function: None`;
    /// those the symbolizer skipped say why.
    pub fn frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(&(pid, *a)))
            .collect();
        if !missing.is_empty() {
            let frames = match self.quarantined.get(&pid) {
                Some(why) => skipped(&missing, why),
                None => self.ask(pid, &missing).unwrap_or_else(|why| {
                    log::info!(
                        "symbolizing pid {pid}: {why}; its frames are reported unsymbolized"
                    );
                    self.worker = None;
                    // Running out of the stop budget is not the process's
                    // doing: it is not held against it.
                    if why != Skipped::Interrupted {
                        if self.quarantined.len() >= QUARANTINE_MAX {
                            self.quarantined.clear();
                        }
                        self.quarantined.insert(pid, why.clone());
                    }
                    skipped(&missing, &why)
                }),
            };
            for (addr, frame) in missing.iter().zip(frames) {
                self.cache.insert((pid, *addr), frame);
            }
        }
        addrs
            .iter()
            .filter_map(|a| self.cache.get(&(pid, *a)).cloned())
            .collect()
    }

    /// Symbolize a captured stack: `ips` from the stack map, `sp_word` from
    /// the kernel side (0 if none).
    pub fn stack(&mut self, pid: u32, ips: &[u64], sp_word: u64) -> Stack {
        let mut all = ips.to_vec();
        if sp_word != 0 {
            all.push(sp_word);
        }
        let mut frames = self.frames(pid, &all);
        let sp_frame = (sp_word != 0).then(|| frames.pop()).flatten();
        let funcs: Vec<Option<&str>> = frames.iter().map(|f| f.function.as_deref()).collect();
        let at = sp_frame
            .as_ref()
            .and_then(|f| splice(ips, &funcs, sp_word, f.function.as_deref()));
        let truncated = is_truncated(&funcs);
        if let (Some(at), Some(mut f)) = (at, sp_frame) {
            f.recovered = true;
            frames.insert(at, f);
        }
        Stack { frames, truncated }
    }
}

/// Frames for `addrs` that the symbolizer did not resolve, for `why`.
fn skipped(addrs: &[u64], why: &Skipped) -> Vec<Frame> {
    addrs
        .iter()
        .map(|&addr| Frame::unresolved(addr, Some(why.clone())))
        .collect()
}

#[cfg(test)]
mod tests;
