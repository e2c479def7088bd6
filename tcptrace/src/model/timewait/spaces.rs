//! Per-namespace state of the analyses that follow timewait sockets
//! (`--timewait`, `--hist`): 4-tuples collide across network namespaces
//! (10.0.0.1:80 exists in many containers), so each namespace has its own
//! tracker, census and sysctls. [`Spaces`] holds them, bounded: a
//! namespace the host no longer lists is reported a last time and dropped,
//! and beyond [`MAX_SPACES`] the least recently active one goes. It also
//! says which namespaces a poll looks into ([`Spaces::due`]): idle ones
//! cost nothing, or one poll in [`idle_every`].
//!
//! Pure: the caller passes the namespaces listed, the time and the ticks.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::netns::Netns;

/// Where a socket or a call is, as the analyses key their state: a
/// namespace, or None when namespaces are not followed (then everything is
/// tcptrace's own).
pub type Place = Option<Netns>;

/// The most namespaces whose state is kept: the host side tracks at most
/// as many (`host::netns::MAX_NAMESPACES`); events may come from a few
/// namespaces it cannot list (held by an open file only).
pub const MAX_SPACES: usize = 8192;

/// Refreshes in a row that may miss a namespace before it counts as gone:
/// one refresh may run before a new namespace's first process is found.
const MISSES_TO_GONE: u8 = 2;

/// For one idle namespace, one poll in how many, when `idle` namespaces
/// share a budget of `per_poll` idle polls per poll: at least `min`, at
/// most `max`. A sock_diag dump walks the host-wide TCP hash table whatever
/// the namespace holds, so the budget, not the number of namespaces, sets
/// what idle namespaces cost (until `max`).
#[must_use]
pub fn idle_every(idle: usize, per_poll: u64, min: u64, max: u64) -> u64 {
    let n = u64::try_from(idle).unwrap_or(u64::MAX);
    n.div_ceil(per_poll.max(1))
        .clamp(min.max(1), max.max(min).max(1))
}

/// One namespace's state and bookkeeping.
#[derive(Debug)]
struct Slot<T> {
    state: T,
    /// A poll of the namespace has been handed over.
    polled: bool,
    /// Refreshes in a row that did not list it.
    missed: u8,
    /// Last touched (an event, a poll), ns.
    touched_ns: u64,
}

/// The per-namespace states of one analysis.
#[derive(Debug)]
pub struct Spaces<T> {
    slots: BTreeMap<Place, Slot<T>>,
    cap: usize,
    /// States dropped: their namespace gone, or over the cap.
    pub dropped: u64,
}

impl<T> Default for Spaces<T> {
    fn default() -> Self {
        Spaces::new(MAX_SPACES)
    }
}

impl<T> Spaces<T> {
    /// At most `cap` namespaces at once (at least one).
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Spaces {
            slots: BTreeMap::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// The state of `place`, touched at `now_ns`; `new` makes it if absent.
    /// Beyond the cap, the least recently touched state other than `keep`'s
    /// is dropped first.
    pub fn entry(
        &mut self,
        place: Place,
        now_ns: u64,
        keep: Place,
        new: impl FnOnce() -> T,
    ) -> &mut T {
        if !self.slots.contains_key(&place) && self.slots.len() >= self.cap {
            let oldest = (self.slots.iter())
                .filter(|(p, _)| **p != keep)
                .min_by_key(|(p, s)| (s.touched_ns, **p))
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.slots.remove(&p);
                self.dropped += 1;
            }
        }
        let slot = self.slots.entry(place).or_insert_with(|| Slot {
            state: new(),
            polled: false,
            missed: 0,
            touched_ns: now_ns,
        });
        slot.touched_ns = slot.touched_ns.max(now_ns);
        &mut slot.state
    }

    #[must_use]
    pub fn get(&self, place: Place) -> Option<&T> {
        self.slots.get(&place).map(|s| &s.state)
    }

    pub fn get_mut(&mut self, place: Place) -> Option<&mut T> {
        self.slots.get_mut(&place).map(|s| &mut s.state)
    }

    /// A poll of `place` was handed to its state.
    pub fn polled(&mut self, place: Place) {
        if let Some(s) = self.slots.get_mut(&place) {
            s.polled = true;
        }
    }

    /// After the host's namespaces were listed again: a state whose
    /// namespace `listed` does not contain misses once; `keep` never does.
    pub fn refreshed(&mut self, listed: &[Place], keep: Place) {
        let listed: BTreeSet<Place> = listed.iter().copied().collect();
        for (p, s) in &mut self.slots {
            if *p == keep || listed.contains(p) {
                s.missed = 0;
            } else {
                s.missed = s.missed.saturating_add(1);
            }
        }
    }

    /// Whether `place`'s namespace is gone: its report is its last.
    #[must_use]
    pub fn is_gone(&self, place: Place) -> bool {
        self.slots
            .get(&place)
            .is_some_and(|s| s.missed >= MISSES_TO_GONE)
    }

    /// Drop the states of gone namespaces (after their last report) and
    /// hand them back.
    pub fn sweep(&mut self) -> Vec<(Place, T)> {
        let gone: Vec<(Place, T)> = self
            .slots
            .extract_if(.., |_, s| s.missed >= MISSES_TO_GONE)
            .map(|(p, s)| (p, s.state))
            .collect();
        self.dropped += gone.len() as u64;
        gone
    }

    /// The namespaces to poll at poll number `tick`: of `listed`, those
    /// never polled; every state `busy` says follows sockets; and, when
    /// `idle_every` is set, the other listed ones one tick in `idle_every`,
    /// staggered by inode so that they do not all come at the same tick.
    #[must_use]
    pub fn due(
        &self,
        listed: &[Place],
        tick: u64,
        idle_every: Option<u64>,
        busy: impl Fn(&T) -> bool,
    ) -> Vec<Place> {
        let mut out: BTreeSet<Place> = (self.slots.iter())
            .filter(|(_, s)| s.missed < MISSES_TO_GONE && busy(&s.state))
            .map(|(p, _)| *p)
            .collect();
        for p in listed {
            let idle_turn = idle_every.is_some_and(|every| {
                let phase = u64::from(p.map_or(0, |n| n.0));
                tick.wrapping_add(phase) % every.max(1) == 0
            });
            let fresh = self.slots.get(p).is_none_or(|s| !s.polled);
            if fresh || idle_turn {
                out.insert(*p);
            }
        }
        out.into_iter().collect()
    }

    /// The states in namespace order.
    pub fn iter(&self) -> impl Iterator<Item = (Place, &T)> {
        self.slots.iter().map(|(p, s)| (*p, &s.state))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Place, &mut T)> {
        self.slots.iter_mut().map(|(p, s)| (*p, &mut s.state))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests;
