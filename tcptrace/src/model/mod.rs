//! Pure logic, unit-tested without root: events, sockets and filters, the
//! plan of a run, histogram maths, leak grouping, containers named by cgroup
//! paths, TIME_WAIT lives, census, projection and advice, and the counters a
//! run reports.

pub mod aging;
pub mod cardinality;
pub mod clock;
pub mod closewait;
pub mod container;
pub mod counters;
pub mod event;
pub mod features;
pub mod filter;
pub mod histogram;
pub mod jvm;
pub mod netns;
pub mod perfmap;
pub mod plan;
pub mod records;
pub mod reset_reasons;
pub mod socket;
pub mod stack;
pub mod sysctl;
pub mod timewait;
