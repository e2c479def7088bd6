//! tcptrace: an eBPF TCP lifecycle tracer. The library holds everything the
//! binary does, in layers (see docs/ARCHITECTURE.md): `model` is pure logic,
//! `kernel` and `host` touch the system, `report` renders, `analyses`
//! consume events, `runtime` drives them, and `cli` builds the plan.

pub mod analyses;
pub mod cli;
pub mod host;
pub mod kernel;
pub mod model;
pub mod report;
pub mod runtime;
