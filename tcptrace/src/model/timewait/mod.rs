//! TIME_WAIT: the lives of timewait sockets, the census by destination and
//! local port with its projection, and the advice derived from both.

pub mod advice;
pub mod census;
pub mod lives;
pub mod projection;
