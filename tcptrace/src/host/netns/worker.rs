//! The thread that enters other network namespaces: a std thread of its
//! own (never tokio's blocking pool), which runs one job at a time. A job
//! opens a way into its namespace (`/run/netns/NAME` or `/proc/PID/ns/net`)
//! only for the `setns`, runs its work there, and returns to tcptrace's
//! namespace through a file of it that the thread keeps open. If that
//! return fails, the thread exits, and with it its hold on the namespace;
//! the next job starts a new thread.

use std::{
    any::Any,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender},
    thread::{self, JoinHandle},
};

use nix::{
    errno::Errno,
    sched::{CloneFlags, setns},
    sys::signal::{SigSet, Signal},
};

use super::scan::is_gone;
use crate::model::netns::Netns;

type Work = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// Why one way into a namespace did not lead into it.
#[derive(Debug)]
pub(super) enum EnterError {
    /// The file is gone (the process exited), or it is now another
    /// namespace's (its pid was reused).
    Gone,
    /// The file is there but could not be opened.
    Unopenable(io::Error),
    /// `setns` refused (EPERM: no `CAP_SYS_ADMIN`).
    Setns(Errno),
}

/// What a job did: the ways that failed (by index, in the order tried) and
/// the work's result, if one way led in.
pub(super) struct Outcome<T> {
    pub failed: Vec<(usize, EnterError)>,
    pub result: Option<T>,
}

struct Job {
    ns: Netns,
    ways: Vec<PathBuf>,
    work: Work,
    reply: Sender<Outcome<Box<dyn Any + Send>>>,
}

/// The thread, started again when it has stopped.
pub(super) struct Worker {
    /// tcptrace's own namespace: each thread gets a copy to return through.
    home: File,
    /// The device of namespace files.
    nsfs_dev: u64,
    thread: Option<(Sender<Job>, JoinHandle<()>)>,
}

/// Why a job did not run.
#[derive(Debug)]
pub(super) enum RunError {
    /// The thread could not be started.
    Start(io::Error),
    /// The thread stopped before it answered.
    Stopped,
}

impl Worker {
    /// `home` is a file of tcptrace's own namespace (`/proc/self/ns/net`).
    pub fn new(home: File, nsfs_dev: u64) -> Self {
        Worker {
            home,
            nsfs_dev,
            thread: None,
        }
    }

    /// Start the thread unless it runs.
    pub fn start(&mut self) -> io::Result<()> {
        if self.thread.as_ref().is_some_and(|(_, t)| !t.is_finished()) {
            return Ok(());
        }
        self.stop();
        let home = self.home.try_clone()?;
        let nsfs_dev = self.nsfs_dev;
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("tcptrace-netns".into())
            .spawn(move || serve(&home, nsfs_dev, &rx))?;
        self.thread = Some((tx, handle));
        Ok(())
    }

    /// Run `work` inside namespace `ns`, entered through the first of
    /// `ways` that leads into it. Waits for the job.
    pub fn run<T: Send + 'static>(
        &mut self,
        ns: Netns,
        ways: Vec<PathBuf>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Outcome<T>, RunError> {
        self.start().map_err(RunError::Start)?;
        let Some((jobs, _)) = &self.thread else {
            return Err(RunError::Stopped);
        };
        let (reply, answer) = mpsc::channel();
        let job = Job {
            ns,
            ways,
            work: Box::new(move || Box::new(work()) as Box<dyn Any + Send>),
            reply,
        };
        if jobs.send(job).is_err() {
            self.stop();
            return Err(RunError::Stopped);
        }
        let Ok(outcome) = answer.recv() else {
            self.stop();
            return Err(RunError::Stopped);
        };
        Ok(Outcome {
            failed: outcome.failed,
            result: outcome
                .result
                .and_then(|r| r.downcast::<T>().ok())
                .map(|r| *r),
        })
    }

    /// Stop the thread and wait for it.
    fn stop(&mut self) {
        if let Some((jobs, handle)) = self.thread.take() {
            drop(jobs);
            let _ = handle.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: jobs until the sender is dropped, or until it cannot
/// return home. It blocks SIGINT and SIGTERM first: it may start before
/// the runtime's signal thread blocks them for the threads made after it,
/// and a signal delivered here would end the process without the final
/// report.
fn serve(home: &File, nsfs_dev: u64, jobs: &Receiver<Job>) {
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGINT);
    stop_signals.add(Signal::SIGTERM);
    if let Err(e) = stop_signals.thread_block() {
        log::warn!("the thread that enters network namespaces cannot block SIGINT: {e}");
    }
    for job in jobs {
        let mut failed = Vec::new();
        let mut result = None;
        let mut stuck = None;
        let mut work = Some(job.work);
        for (i, way) in job.ways.iter().enumerate() {
            match enter(way, job.ns, nsfs_dev) {
                Ok(()) => {
                    result = work.take().map(|w| w());
                    stuck = setns(home, CloneFlags::CLONE_NEWNET).err();
                    break;
                }
                Err(e) => {
                    let refused = matches!(e, EnterError::Setns(_));
                    failed.push((i, e));
                    if refused {
                        break;
                    }
                }
            }
        }
        let _ = job.reply.send(Outcome { failed, result });
        if let Some(e) = stuck {
            log::error!(
                "cannot return to tcptrace's network namespace after entering {}: {e}; the \
                 thread that enters namespaces exits",
                job.ns
            );
            return;
        }
    }
}

/// Open `way` and `setns` into it if it is still namespace `ns`. The file
/// is closed before this returns. Opened non-blocking: something other than
/// a namespace put in its place (a FIFO) would not stop the thread.
fn enter(way: &Path, ns: Netns, nsfs_dev: u64) -> Result<(), EnterError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(way);
    let file = opened.map_err(|e| {
        if is_gone(&e) {
            EnterError::Gone
        } else {
            EnterError::Unopenable(e)
        }
    })?;
    let meta = file.metadata().map_err(EnterError::Unopenable)?;
    if meta.dev() != nsfs_dev || meta.ino() != u64::from(ns.0) {
        return Err(EnterError::Gone);
    }
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(EnterError::Setns)
}
