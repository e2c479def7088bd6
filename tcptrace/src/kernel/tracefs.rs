//! tracefs: finding (or mounting) it, and parsing tracepoint `format` files
//! for field offsets and `__print_symbolic` value names.
//!
//! Offsets change between kernels (`tcp_send_reset` in 6.10), and
//! `enum sk_rst_reason` grows, so both are read from the running kernel.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Where tracefs is normally mounted, then its legacy place under debugfs.
pub const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); \
         mount it with: mount -t tracefs tracefs /sys/kernel/tracing"
    )]
    NotMounted(#[source] nix::Error),
    #[error(
        "this kernel has no tracepoint {group}:{name} ({path} is missing); \
         tcptrace needs it (CONFIG_TRACEPOINTS, Linux {} or later)",
        crate::model::features::since(name)
    )]
    MissingTracepoint {
        group: String,
        name: String,
        path: PathBuf,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {tracepoint}: {source}")]
    Format {
        tracepoint: String,
        #[source]
        source: FormatError,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("line {line}: malformed field description: {text:?}")]
    BadField { line: usize, text: String },
    #[error("field {0:?} is missing")]
    MissingField(String),
    #[error("field {name:?} has size {actual}, expected {expected}")]
    FieldSize {
        name: String,
        expected: u32,
        actual: u32,
    },
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
    /// Whether tcptrace mounted it itself.
    pub mounted_here: bool,
}

fn has_events(root: &Path) -> bool {
    root.join("events").is_dir()
}

impl Tracefs {
    /// Find tracefs, mounting it at `/sys/kernel/tracing` if it is not mounted
    /// (it is not at boot on some systems).
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        if let Some(t) = Self::find() {
            return Ok(t);
        }
        let target = Path::new(MOUNT_POINTS[0]);
        nix::mount::mount(
            Some("tracefs"),
            target,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(TracefsError::NotMounted)?;
        log::info!("mounted tracefs at {}", target.display());
        Ok(Self {
            root: target.to_path_buf(),
            mounted_here: true,
        })
    }

    /// Find a mounted tracefs without changing anything.
    #[must_use]
    pub fn find() -> Option<Self> {
        MOUNT_POINTS
            .iter()
            .map(Path::new)
            .find(|p| has_events(p))
            .map(|p| Self {
                root: p.to_path_buf(),
                mounted_here: false,
            })
    }

    /// Use a tracefs-like tree at `root` (tests).
    #[must_use]
    pub fn at(root: PathBuf) -> Self {
        Self {
            root,
            mounted_here: false,
        }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Read and parse `events/<group>/<name>/format`.
    pub fn format(&self, group: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(group)
            .join(name)
            .join("format");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TracefsError::MissingTracepoint {
                    group: group.to_owned(),
                    name: name.to_owned(),
                    path,
                });
            }
            Err(source) => return Err(TracefsError::Io { path, source }),
        };
        Format::parse(&text).map_err(|source| TracefsError::Format {
            tracepoint: format!("{group}:{name}"),
            source,
        })
    }
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// A parsed tracepoint `format` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Format {
    /// Parse the text of a `format` file.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut fmt = Format::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("print fmt:") {
                rest.trim().clone_into(&mut fmt.print_fmt);
            } else if line.starts_with("field:") {
                fmt.fields
                    .push(parse_field(line).ok_or_else(|| FormatError::BadField {
                        line: i + 1,
                        text: line.to_owned(),
                    })?);
            }
        }
        Ok(fmt)
    }

    /// The offset of field `name`, checking that its size is `size`.
    pub fn offset(&self, name: &str, size: u32) -> Result<u32, FormatError> {
        let f = self
            .fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| FormatError::MissingField(name.to_owned()))?;
        if f.size != size {
            return Err(FormatError::FieldSize {
                name: name.to_owned(),
                expected: size,
                actual: f.size,
            });
        }
        Ok(f.offset)
    }

    /// The `{ value, "NAME" }` pairs of `__print_symbolic(REC-><field>, ...)`.
    /// Entries whose value is not numeric (an unexpanded macro) are skipped.
    #[must_use]
    pub fn symbols(&self, field: &str) -> Vec<(u64, String)> {
        let needle = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&needle) else {
            return Vec::new();
        };
        let mut rest = &self.print_fmt[start + needle.len()..];
        let mut out = Vec::new();
        // Entries are `{ 14, "TCP_STATE" }`, separated by commas, up to the
        // closing parenthesis of the call.
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            let Some(body) = rest.strip_prefix('{') else {
                break;
            };
            let Some(end) = body.find('}') else { break };
            let entry = &body[..end];
            rest = &body[end + 1..];
            let Some((value, name)) = entry.split_once(',') else {
                continue;
            };
            let value = value.trim();
            let parsed = value.strip_prefix("0x").map_or_else(
                || value.parse().ok(),
                |hex| u64::from_str_radix(hex, 16).ok(),
            );
            if let Some(v) = parsed {
                out.push((v, name.trim().trim_matches('"').to_owned()));
            }
        }
        out
    }
}

/// `field:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':')?;
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = value.trim().parse().ok(),
            "size" => size = value.trim().parse().ok(),
            _ => {}
        }
    }
    // The name is the last word of the declaration, without any `[N]`.
    let name = decl?.rsplit([' ', '*']).next()?;
    let name = name.split('[').next()?.to_owned();
    if name.is_empty() {
        return None;
    }
    Some(Field {
        name,
        offset: offset?,
        size: size?,
    })
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET: &str = "name: tcp_send_reset
ID: 2280
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p state=%s reason=%s\", REC->skbaddr, REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }) : \"UNKNOWN\", __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 1, \"NO_SOCKET\" }, { 14, \"TCP_STATE\" }, { 0x1a, \"HEX\" })
";

    #[test]
    fn parses_fields_and_offsets() {
        let f = Format::parse(SEND_RESET).unwrap();
        assert_eq!(f.offset("skaddr", 8), Ok(16));
        assert_eq!(f.offset("saddr", 28), Ok(32));
        assert_eq!(f.offset("reason", 4), Ok(28));
        assert_eq!(f.fields.len(), 7);
    }

    #[test]
    fn size_mismatch_and_missing_field_are_typed_errors() {
        let f = Format::parse(SEND_RESET).unwrap();
        assert_eq!(
            f.offset("saddr", 4),
            Err(FormatError::FieldSize {
                name: "saddr".into(),
                expected: 4,
                actual: 28
            })
        );
        assert_eq!(
            f.offset("sport", 2),
            Err(FormatError::MissingField("sport".into()))
        );
    }

    #[test]
    fn symbolic_names_skip_unexpanded_macros() {
        let f = Format::parse(SEND_RESET).unwrap();
        assert_eq!(
            f.symbols("reason"),
            vec![
                (0, "NOT_SPECIFIED".to_owned()),
                (1, "NO_SOCKET".to_owned()),
                (14, "TCP_STATE".to_owned()),
                (26, "HEX".to_owned()),
            ]
        );
        // TCP_ESTABLISHED is a macro name in this print fmt, not a number.
        assert!(f.symbols("state").is_empty());
        assert!(f.symbols("nosuch").is_empty());
    }

    #[test]
    fn malformed_field_line_is_an_error() {
        let err = Format::parse("format:\n\tfield:int x;\toffset:zz;\tsize:4;\n").unwrap_err();
        assert!(
            matches!(err, FormatError::BadField { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let dir = std::env::temp_dir().join(format!("tcptrace-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("events")).unwrap();
        let err = Tracefs::at(dir.clone())
            .format("tcp", "tcp_nosuch")
            .unwrap_err();
        assert!(err.to_string().contains("tcp:tcp_nosuch"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
