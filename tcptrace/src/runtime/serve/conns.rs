//! The connections being served: a slot each out of a fixed number, and,
//! for those still waiting for their request headers, the task to close
//! when a new connection needs the room.
//!
//! Closing the oldest waiting connection rather than turning the new one
//! away is what lets a scraper in while idle or slow clients hold every
//! slot or every file descriptor: a real client sends its headers at once,
//! so the oldest connection without them is the least likely to be one.
//! When every slot serves a request, the new connection is closed at once
//! (each of those ends within the write timeout).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use super::{HEADER_TIMEOUT, WRITE_TIMEOUT, site::Site};

pub struct Conns {
    slots: Arc<Semaphore>,
    /// The tasks of connections still waiting for their request headers, by
    /// age (ids grow).
    waiting: Mutex<BTreeMap<u64, JoinHandle<()>>>,
    next_id: Mutex<u64>,
    site: Arc<Site>,
}

impl Conns {
    pub fn new(slots: usize, site: Arc<Site>) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: Mutex::new(BTreeMap::new()),
            next_id: Mutex::new(0),
            site,
        })
    }

    /// The map of waiting connections (a panic while it was held leaves it
    /// consistent: every update is a single insert or remove).
    fn waiting(&self) -> MutexGuard<'_, BTreeMap<u64, JoinHandle<()>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serve `stream` in a task of its own, in a free slot or the slot of
    /// the oldest connection still waiting for its headers; with neither,
    /// close it.
    pub async fn admit(self: &Arc<Self>, stream: TcpStream) {
        let slot = match self.free_slot() {
            Some(s) => s,
            None if self.evict_oldest().await => match self.free_slot() {
                Some(s) => s,
                None => return,
            },
            None => return,
        };
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            *next
        };
        let task = tokio::spawn(Arc::clone(self).serve(id, stream, slot));
        // The task cannot have run yet (this thread has not yielded since
        // the spawn), so its removal comes after this insertion.
        self.waiting().insert(id, task);
    }

    fn free_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Close the oldest connection still waiting for its request headers,
    /// and wait until its socket is closed and its slot free. False if there
    /// is none.
    pub async fn evict_oldest(&self) -> bool {
        let Some((_, task)) = self.waiting().pop_first() else {
            return false;
        };
        task.abort();
        // Returns once the task's future, its socket and slot with it, is
        // dropped (or once it has ended by itself).
        let _ = task.await;
        true
    }

    /// The connection `id` has sent its request headers, or is gone: it is
    /// no longer closed to make room.
    fn settled(&self, id: u64) {
        self.waiting().remove(&id);
    }

    /// One request on `stream`: headers within [`HEADER_TIMEOUT`] (hyper's
    /// timer, from the first poll), then the response within
    /// [`WRITE_TIMEOUT`]; `_slot` is released when the connection ends.
    async fn serve(self: Arc<Self>, id: u64, stream: TcpStream, _slot: OwnedSemaphorePermit) {
        let requested = Arc::new(Notify::new());
        let service = {
            let (conns, requested) = (Arc::clone(&self), Arc::clone(&requested));
            service_fn(move |req| {
                conns.settled(id);
                requested.notify_one();
                let response = conns.site.respond(&req);
                async move { Ok::<_, Infallible>(response) }
            })
        };
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        // Errors (a timeout, a bad request, a reset) end the connection;
        // there is nobody to tell.
        tokio::select! {
            _ = &mut conn => {}
            () = requested.notified() => {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, conn).await;
            }
        }
        self.settled(id);
    }
}
