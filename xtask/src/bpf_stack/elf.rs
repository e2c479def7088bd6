//! Reads a BPF ELF object, as bpf-linker writes it, into [`Func`]s: every
//! FUNC symbol of an executable section, with its stack depth and its calls
//! resolved through the relocations. The programs are the functions outside
//! `.text`; `.text` holds the functions they call.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result, bail};
use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, RelocationFlags, RelocationTarget,
    SectionKind, SymbolKind,
};

use super::graph::{self, Func, Insn, Slot};

/// `R_BPF_64_64`: an `ld_imm64` of a map's or a function's address.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: a call's target.
const R_BPF_64_32: u32 = 10;

/// A program: the function the kernel starts at, and its ELF section.
#[derive(Debug)]
pub struct Program {
    pub func: usize,
    pub section: String,
}

/// The object's functions and programs.
#[derive(Debug)]
pub struct Object {
    pub funcs: Vec<Func>,
    pub programs: Vec<Program>,
}

/// An executable section.
struct Code {
    name: String,
    insns: Vec<Insn>,
    /// The relocations by instruction index: the code slot of the symbol
    /// named, or `None` for a symbol outside code (a map, data).
    relocs: HashMap<i64, Option<Slot>>,
}

/// A function: its demangled name, section and instruction range.
struct Span {
    name: String,
    section: usize,
    start: usize,
    end: usize,
}

pub fn read(data: &[u8]) -> Result<Object> {
    let file = object::File::parse(data).context("not an object file")?;
    if !file.is_little_endian() {
        bail!("a big-endian object: only bpfel is read");
    }
    let texts: BTreeSet<usize> = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .map(|s| s.index().0)
        .collect();
    let mut code: BTreeMap<usize, Code> = BTreeMap::new();
    for s in file.sections().filter(|s| texts.contains(&s.index().0)) {
        let mut relocs = HashMap::new();
        for (offset, r) in s.relocations() {
            let (RelocationFlags::Elf { r_type }, RelocationTarget::Symbol(si)) =
                (r.flags(), r.target())
            else {
                continue;
            };
            if r_type != R_BPF_64_32 && r_type != R_BPF_64_64 {
                continue;
            }
            let sym = file.symbol_by_index(si)?;
            let target = sym
                .section_index()
                .filter(|i| texts.contains(&i.0))
                .map(|i| Ok::<_, anyhow::Error>(slot(i.0, usize::try_from(sym.address() / 8)?)))
                .transpose()?;
            relocs.insert(i64::try_from(offset / 8)?, target);
        }
        code.insert(
            s.index().0,
            Code {
                name: s.name()?.to_owned(),
                insns: Insn::decode_all(s.data()?),
                relocs,
            },
        );
    }
    let spans = functions(&file, &code)?;
    let starts: HashMap<Slot, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (slot(s.section, s.start), i))
        .rev()
        .collect();
    let mut funcs = Vec::with_capacity(spans.len());
    let mut programs = Vec::new();
    for (i, span) in spans.into_iter().enumerate() {
        let (c, name) = (&code[&span.section], span.name);
        let insns = &c.insns[span.start..span.end];
        let mut calls = Vec::new();
        for (pc, &insn) in (span.start..).zip(insns) {
            let at = slot(span.section, pc);
            let reloc = c.relocs.get(&at.insn).copied();
            if reloc == Some(None) && insn.is_pseudo_call() {
                bail!("{name}: the call at {}+{pc} names no code", c.name);
            }
            let Some(t) = graph::call_target(at, insn, reloc.flatten()) else {
                continue;
            };
            let Some(&callee) = starts.get(&t) else {
                bail!(
                    "{name}: the call at {}+{pc} goes to {}+{}, where no function starts",
                    c.name,
                    code.get(&t.section).map_or("?", |c| &c.name),
                    t.insn
                );
            };
            if !calls.contains(&callee) {
                calls.push(callee);
            }
        }
        if c.name != ".text" {
            programs.push(Program {
                func: i,
                section: c.name.clone(),
            });
        }
        funcs.push(Func {
            name,
            depth: graph::frame_depth(insns),
            calls,
        });
    }
    Ok(Object { funcs, programs })
}

fn slot(section: usize, insn: usize) -> Slot {
    Slot {
        section,
        insn: i64::try_from(insn).unwrap_or(i64::MAX),
    }
}

/// The FUNC symbols of the code sections, demangled: from the symbol's
/// value for its size, or to the next function when it has none.
fn functions(file: &object::File<'_>, code: &BTreeMap<usize, Code>) -> Result<Vec<Span>> {
    let mut found: Vec<(Span, usize)> = Vec::new();
    for sym in file.symbols().filter(|s| s.kind() == SymbolKind::Text) {
        let Some(section) = sym.section_index().map(|i| i.0) else {
            continue;
        };
        if !code.contains_key(&section) {
            continue;
        }
        let start = usize::try_from(sym.address() / 8)?;
        let span = Span {
            name: format!("{:#}", rustc_demangle::demangle(sym.name()?)),
            section,
            start,
            end: start,
        };
        found.push((span, usize::try_from(sym.size() / 8)?));
    }
    found.sort_by_key(|(s, _)| (s.section, s.start));
    let next: Vec<Option<(usize, usize)>> = found
        .iter()
        .skip(1)
        .map(|(s, _)| Some((s.section, s.start)))
        .chain([None])
        .collect();
    let mut spans = Vec::with_capacity(found.len());
    for ((mut span, size), next) in found.into_iter().zip(next) {
        let len = code[&span.section].insns.len();
        span.end = match next {
            _ if size > 0 => span.start + size,
            Some((section, start)) if section == span.section => start,
            _ => len,
        };
        if span.end > len || span.start >= span.end {
            bail!(
                "{}: instructions {}..{} are outside its section",
                span.name,
                span.start,
                span.end
            );
        }
        spans.push(span);
    }
    Ok(spans)
}
