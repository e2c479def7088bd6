//! Network namespaces as tcptrace names them: by the inode of the
//! namespace (`ls -l /proc/PID/ns/net` shows `net:[INODE]`), which the
//! kernel side reads from each socket (`sk->__sk_common.skc_net.net->ns.inum`).

use std::{fmt, str::FromStr};

use thiserror::Error;

/// A network namespace, by its inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Netns(pub u32);

impl Netns {
    /// Parse the target of a `/proc/PID/ns/net` link: `net:[4026531840]`.
    #[must_use]
    pub fn from_link(link: &str) -> Option<Self> {
        let n = link.strip_prefix("net:[")?.strip_suffix(']')?;
        n.parse().ok().map(Netns)
    }
}

impl fmt::Display for Netns {
    /// The inode alone, as JSON and `/metrics` carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How `--netns` names a namespace: a bare number would be ambiguous
/// (a pid or an inode?), so each form says which it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsSpec {
    /// A name under `/run/netns` (`ip netns add NAME`).
    Name(String),
    /// The namespace process `N` is in: `pid:N`.
    Pid(u32),
    /// The namespace with this inode: `inode:N`.
    Inode(u32),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "a bare number is ambiguous: write pid:{0} for the namespace of process {0}, or \
         inode:{0} for the namespace whose inode is {0}"
    )]
    BareNumber(String),
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("an empty namespace name")]
    Empty,
    #[error("{0:?} is not a name under /run/netns (no '/', not '.' or '..')")]
    BadName(String),
}

impl FromStr for NetnsSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let number = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| SpecError::NotANumber(n.to_owned()))
        };
        if let Some(n) = s.strip_prefix("pid:") {
            return number(n).map(NetnsSpec::Pid);
        }
        if let Some(n) = s.strip_prefix("inode:") {
            return number(n).map(NetnsSpec::Inode);
        }
        if s.is_empty() {
            return Err(SpecError::Empty);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SpecError::BareNumber(s.to_owned()));
        }
        if s.contains('/') || s == "." || s == ".." || s.contains('\0') {
            return Err(SpecError::BadName(s.to_owned()));
        }
        Ok(NetnsSpec::Name(s.to_owned()))
    }
}

impl fmt::Display for NetnsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsSpec::Name(n) => write!(f, "{n}"),
            NetnsSpec::Pid(p) => write!(f, "pid:{p}"),
            NetnsSpec::Inode(i) => write!(f, "inode:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_specs() {
        assert_eq!(
            Netns::from_link("net:[4026531840]"),
            Some(Netns(4_026_531_840))
        );
        assert_eq!(Netns::from_link("mnt:[4026531840]"), None);
        assert_eq!(Netns::from_link("net:[x]"), None);
        assert_eq!("pid:42".parse(), Ok(NetnsSpec::Pid(42)));
        assert_eq!(
            "inode:4026531840".parse(),
            Ok(NetnsSpec::Inode(4_026_531_840))
        );
        assert_eq!("blue".parse(), Ok(NetnsSpec::Name("blue".into())));
        assert!(matches!(
            "42".parse::<NetnsSpec>(),
            Err(SpecError::BareNumber(_))
        ));
        assert!(matches!(
            "pid:x".parse::<NetnsSpec>(),
            Err(SpecError::NotANumber(_))
        ));
        assert!(matches!(
            "../etc".parse::<NetnsSpec>(),
            Err(SpecError::BadName(_))
        ));
        assert_eq!("".parse::<NetnsSpec>(), Err(SpecError::Empty));
        for s in ["pid:7", "inode:9", "blue"] {
            assert_eq!(s.parse::<NetnsSpec>().unwrap().to_string(), s);
        }
    }
}
