//! The running kernel's release, as `uname -r` prints it.

/// The kernel release, or `unknown` when uname fails.
#[must_use]
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_owned(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}
