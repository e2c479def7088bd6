//! The arithmetic of the check, on decoded instructions: a function's stack
//! depth, its BPF-to-BPF calls, and the worst chain of frames from a
//! program's entry, summed as `check_max_stack_depth` sums them.

use std::collections::HashMap;

/// The most stack a chain of frames may use (`MAX_BPF_STACK`).
pub const MAX_STACK: u32 = 512;
/// The most functions a chain may have: the verifier refuses a call that
/// would make frame index `MAX_CALL_FRAMES` (8), the ninth function.
pub const MAX_FRAMES: usize = 8;
/// The verifier's granularity for each frame (the interpreter's; kernels
/// before 6.9 use it for JIT-compiled programs too).
pub const FRAME_ROUND: u32 = 32;

/// The frame pointer, read-only.
const R10: u8 = 10;
/// `src_reg` of a call to another BPF function (`BPF_PSEUDO_CALL`).
const PSEUDO_CALL: u8 = 1;
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW, two slots
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const SUB64_IMM: u8 = 0x17; // BPF_ALU64 | BPF_SUB | BPF_K

/// One 8-byte BPF instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Little-endian (`bpfel`) instructions; a trailing partial one is dropped.
    pub fn decode_all(bytes: &[u8]) -> Vec<Insn> {
        bytes
            .chunks_exact(8)
            .map(|b| Insn {
                code: b[0],
                dst: b[1] & 0x0f,
                src: b[1] >> 4,
                off: i16::from_le_bytes([b[2], b[3]]),
                imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            })
            .collect()
    }

    /// A call of another BPF function (not a helper or a kfunc).
    pub fn is_pseudo_call(self) -> bool {
        self.code == CALL && self.src == PSEUDO_CALL
    }

    fn class(self) -> u8 {
        self.code & 0x07
    }

    /// The registers this instruction writes, besides memory.
    fn writes(self) -> [Option<u8>; 2] {
        match self.class() {
            // ld_imm64 and BPF_LDX, BPF_ALU, BPF_ALU64 write dst; the
            // legacy packet loads (the rest of BPF_LD) r0.
            0x00 if self.code != LD_IMM64 => [Some(0), None],
            0x00 | 0x01 | 0x04 | 0x07 => [Some(self.dst), None],
            // An atomic with BPF_FETCH writes src (cmpxchg: r0).
            0x03 if self.code & 0xe0 == 0xc0 => [Some(self.src), Some(0)],
            _ => [None, None],
        }
    }
}

/// A call target: a slot in one of the object's code sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub section: usize,
    pub insn: i64,
}

/// A relocation at an instruction: the slot of the symbol it names (a
/// function's start, or a section's start for a section symbol).
pub type Reloc = Slot;

/// Where the instruction at `at` goes into another BPF function, if it does:
/// a call with `src_reg == BPF_PSEUDO_CALL` goes to `pc + imm + 1`, in the
/// relocation's symbol when it has one (another section), else in its own
/// section; an `ld_imm64` relocated against code loads a callback's address
/// (the verifier walks it as a call too), `imm` bytes into the symbol.
pub fn call_target(at: Slot, insn: Insn, reloc: Option<Reloc>) -> Option<Slot> {
    let imm = i64::from(insn.imm);
    match (insn.code, reloc) {
        (CALL, Some(r)) if insn.is_pseudo_call() => Some(Slot {
            section: r.section,
            insn: r.insn + imm + 1,
        }),
        (CALL, None) if insn.is_pseudo_call() => Some(Slot {
            section: at.section,
            insn: at.insn + imm + 1,
        }),
        (LD_IMM64, Some(r)) => Some(Slot {
            section: r.section,
            insn: r.insn + imm / 8,
        }),
        _ => None,
    }
}

/// The bytes below the frame pointer that `insns` use: the deepest r10
/// offset of a load or store through r10 or a register copied from it, or
/// of a pointer made from it (`rX = r10; rX += -N`, handed to a helper or a
/// callee). The scan is linear: a copy of r10 stays known across jumps until
/// its register is written, which can only over-count.
pub fn frame_depth(insns: &[Insn]) -> u32 {
    // Registers known to hold r10 + offset.
    let mut fp: [Option<i64>; 11] = [None; 11];
    fp[usize::from(R10)] = Some(0);
    let mut deepest: i64 = 0;
    let mut skip = false;
    for &i in insns {
        if skip {
            skip = false;
            continue;
        }
        let reg = |r: u8| fp.get(usize::from(r)).copied().flatten();
        let access = match i.class() {
            0x01 => reg(i.src),        // BPF_LDX: src + off
            0x02 | 0x03 => reg(i.dst), // BPF_ST, BPF_STX: dst + off
            _ => None,
        };
        if let Some(base) = access {
            deepest = deepest.min(base + i64::from(i.off));
        }
        let made = match i.code {
            MOV64_REG => reg(i.src),
            ADD64_IMM => reg(i.dst).map(|b| b + i64::from(i.imm)),
            SUB64_IMM => reg(i.dst).map(|b| b - i64::from(i.imm)),
            _ => None,
        };
        if i.code == CALL {
            // Calls clobber r0-r5.
            fp[..6].fill(None);
        }
        for d in i.writes().into_iter().flatten().filter(|&d| d < R10) {
            fp[usize::from(d)] = if d == i.dst { made } else { None };
        }
        if let Some(m) = made {
            deepest = deepest.min(m);
        }
        skip = i.code == LD_IMM64;
    }
    u32::try_from(-deepest).unwrap_or(u32::MAX)
}

/// A frame's share of the combined stack: its depth rounded up to
/// [`FRAME_ROUND`], at least one granule even when it uses none.
pub fn rounded(depth: u32) -> u32 {
    depth
        .max(1)
        .div_ceil(FRAME_ROUND)
        .saturating_mul(FRAME_ROUND)
}

/// A BPF function: its stack depth and the functions it calls (indexes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub depth: u32,
    pub calls: Vec<usize>,
}

/// The chain of frames with the most stack from one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Function indexes, entry first.
    pub funcs: Vec<usize>,
    /// The sum of their rounded depths.
    pub total: u32,
    /// The most functions on any chain from the entry (not only this one).
    pub frames: usize,
}

/// The verifier refuses a function that can reach itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recursion(pub Vec<usize>);

/// The worst chain from `entry`.
pub fn worst_chain(funcs: &[Func], entry: usize) -> Result<Chain, Recursion> {
    let mut memo = HashMap::new();
    let mut path = Vec::new();
    walk(funcs, entry, &mut memo, &mut path)
}

/// Depth-first, each function's worst chain computed once.
fn walk(
    funcs: &[Func],
    f: usize,
    memo: &mut HashMap<usize, Chain>,
    path: &mut Vec<usize>,
) -> Result<Chain, Recursion> {
    if let Some(c) = memo.get(&f) {
        return Ok(c.clone());
    }
    if let Some(p) = path.iter().position(|&g| g == f) {
        let mut cycle = path[p..].to_vec();
        cycle.push(f);
        return Err(Recursion(cycle));
    }
    path.push(f);
    let mut best: Option<Chain> = None;
    let mut frames = 0;
    for &callee in &funcs[f].calls {
        let c = walk(funcs, callee, memo, path)?;
        frames = frames.max(c.frames);
        if best.as_ref().is_none_or(|b| c.total > b.total) {
            best = Some(c);
        }
    }
    path.pop();
    let (chain, below) = best.map_or((vec![f], 0), |b| {
        let mut v = Vec::with_capacity(b.funcs.len() + 1);
        v.push(f);
        v.extend(b.funcs);
        (v, b.total)
    });
    let c = Chain {
        funcs: chain,
        total: below.saturating_add(rounded(funcs[f].depth)),
        frames: frames + 1,
    };
    memo.insert(f, c.clone());
    Ok(c)
}
