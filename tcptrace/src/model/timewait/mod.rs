//! TIME_WAIT: the lives of timewait sockets, the census by destination and
//! local port with its projection, the advice derived from both, and the
//! per-namespace state that holds them.

pub mod advice;
pub mod census;
pub mod lives;
pub mod projection;
pub mod spaces;
