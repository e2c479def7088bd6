//! The stack check's arithmetic on hand-made instructions and call graphs.

use super::{
    check,
    elf::{Object, Program},
    graph::{Chain, Func, Insn, Recursion, Slot, call_target, frame_depth, rounded, worst_chain},
    short,
};

const R10: u8 = 10;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// `*(u64 *)(dst + off) = src`
fn stx(dst: u8, off: i16, src: u8) -> Insn {
    insn(0x7b, dst, src, off, 0)
}
/// `dst = *(u64 *)(src + off)`
fn ldx(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x79, dst, src, off, 0)
}
/// `*(u32 *)(dst + off) = imm`
fn st(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x62, dst, 0, off, imm)
}
/// `dst = src`
fn mov(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst = imm`
fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst += imm`
fn add(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// A helper call.
fn helper(id: i32) -> Insn {
    insn(0x85, 0, 0, 0, id)
}
/// A BPF-to-BPF call, `imm` instructions past the next.
fn pseudo_call(imm: i32) -> Insn {
    insn(0x85, 0, 1, 0, imm)
}
fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}

#[test]
fn instructions_decode_little_endian() {
    // *(u64 *)(r10 - 104) = r2; call -1
    let bytes = [
        0x7b, 0x2a, 0x98, 0xff, 0, 0, 0, 0, //
        0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xaa,
    ];
    assert_eq!(
        Insn::decode_all(&bytes),
        [stx(R10, -104, 2), pseudo_call(-1)]
    );
}

#[test]
fn depth_is_the_deepest_access_through_the_frame_pointer() {
    assert_eq!(frame_depth(&[mov_imm(0, 0), exit()]), 0);
    let code = [
        stx(R10, -8, 1),
        ldx(2, R10, -104),
        st(R10, -24, 0),
        // Above the frame pointer is not this frame's stack.
        ldx(3, R10, 16),
        exit(),
    ];
    assert_eq!(frame_depth(&code), 104);
}

#[test]
fn depth_follows_copies_of_the_frame_pointer() {
    // A pointer made for a helper counts though nothing here reads it.
    let made = [mov(2, R10), add(2, -472), helper(1), exit()];
    assert_eq!(frame_depth(&made), 472);
    // Accesses through a copy add their offset to the copy's.
    let through = [mov(1, R10), add(1, -32), stx(1, -16, 2), exit()];
    assert_eq!(frame_depth(&through), 48);
    // A callee-saved copy survives a call.
    let kept = [mov(6, R10), helper(1), stx(6, -64, 0), exit()];
    assert_eq!(frame_depth(&kept), 64);
}

#[test]
fn depth_forgets_a_copy_once_its_register_is_written() {
    let rewritten = [mov(1, R10), mov_imm(1, 0), stx(1, -100, 2), exit()];
    assert_eq!(frame_depth(&rewritten), 0);
    let loaded = [mov(1, R10), ldx(1, 7, 0), stx(1, -100, 2), exit()];
    assert_eq!(frame_depth(&loaded), 0);
    // Calls clobber r1-r5.
    let called = [mov(1, R10), helper(1), stx(1, -100, 2), exit()];
    assert_eq!(frame_depth(&called), 0);
}

#[test]
fn the_second_slot_of_ld_imm64_is_no_instruction() {
    let code = [insn(0x18, 1, 0, 0, 0), stx(R10, -200, 1), exit()];
    assert_eq!(frame_depth(&code), 0);
    let after = [
        insn(0x18, 1, 0, 0, 0),
        insn(0, 0, 0, 0, 0),
        stx(R10, -200, 1),
    ];
    assert_eq!(frame_depth(&after), 200);
}

#[test]
fn frames_round_up_to_32_bytes_and_never_to_zero() {
    let r: Vec<u32> = [0, 1, 32, 33, 472, 504].map(rounded).to_vec();
    assert_eq!(r, [32, 32, 32, 64, 480, 512]);
}

#[test]
fn call_targets_are_relative_or_relocated() {
    let at = |section, insn| Slot { section, insn };
    // In the same section: pc + imm + 1.
    assert_eq!(call_target(at(4, 5), pseudo_call(3), None), Some(at(4, 9)));
    assert_eq!(call_target(at(4, 5), pseudo_call(-6), None), Some(at(4, 0)));
    // Helpers and kfuncs are not BPF functions.
    assert_eq!(call_target(at(4, 5), helper(1), None), None);
    assert_eq!(call_target(at(4, 5), insn(0x85, 0, 2, 0, 7), None), None);
    // Relocated against a function (imm -1) or .text's section symbol.
    assert_eq!(
        call_target(at(4, 0), pseudo_call(-1), Some(at(2, 100))),
        Some(at(2, 100))
    );
    assert_eq!(
        call_target(at(4, 0), pseudo_call(99), Some(at(2, 0))),
        Some(at(2, 100))
    );
    // A callback's address, imm bytes into its symbol.
    assert_eq!(
        call_target(at(4, 0), insn(0x18, 1, 0, 0, 16), Some(at(2, 10))),
        Some(at(2, 12))
    );
    // A map's address names no code.
    assert_eq!(call_target(at(4, 0), insn(0x18, 1, 0, 0, 0), None), None);
}

fn func(name: &str, depth: u32, calls: &[usize]) -> Func {
    Func {
        name: name.to_owned(),
        depth,
        calls: calls.to_vec(),
    }
}

/// The generic `inet_sock_set_state`: a trampoline into .text, whose frame
/// calls `insert_details` (which calls memset) and `sock_netns`.
fn set_state(main_depth: u32) -> Vec<Func> {
    vec![
        func("inet_sock_set_state", 0, &[1]),
        func("set_state::inet_sock_set_state", main_depth, &[4, 2]),
        func("sock_details::insert_details", 8, &[3]),
        func("memset", 0, &[]),
        func("netns::sock_netns", 16, &[]),
    ]
}

#[test]
fn the_worst_chain_sums_rounded_frames() {
    let funcs = set_state(472);
    assert_eq!(
        worst_chain(&funcs, 0),
        Ok(Chain {
            funcs: vec![0, 1, 2, 3],
            total: 32 + 480 + 32 + 32,
            frames: 4,
        })
    );
    // Without the deeper branch, the other.
    let mut funcs = funcs;
    funcs[1].calls = vec![4];
    let c = worst_chain(&funcs, 0).unwrap();
    assert_eq!((c.funcs, c.total, c.frames), (vec![0, 1, 4], 544, 3));
}

#[test]
fn a_function_that_reaches_itself_is_recursion() {
    let funcs = [func("a", 8, &[1]), func("b", 8, &[2]), func("c", 8, &[1])];
    assert_eq!(worst_chain(&funcs, 0), Err(Recursion(vec![1, 2, 1])));
}

fn object(funcs: Vec<Func>) -> Object {
    Object {
        funcs,
        programs: vec![Program {
            func: 0,
            section: "tracepoint".to_owned(),
        }],
    }
}

#[test]
fn a_chain_over_the_limit_is_refused_by_name() {
    // Exactly the limit passes: 32 + 480.
    let (rows, refused) = check(&object(vec![func("p", 0, &[1]), func("f", 472, &[])]), 512);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(rows[0].total, 512);
    // The same program against a smaller limit.
    let (_, refused) = check(&object(vec![func("p", 0, &[1]), func("f", 472, &[])]), 480);
    assert_eq!(
        refused,
        [
            "p (tracepoint): combined stack size of 2 calls is 512 (over 480): \
          p (0 -> 32) -> f (472 -> 480)"
        ]
    );
    // The frame that 6.1 refused: 504 bytes under a trampoline.
    let (_, refused) = check(&object(vec![func("p", 0, &[1]), func("f", 504, &[])]), 512);
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains("2 calls is 544"), "{refused:?}");
}

#[test]
fn more_than_eight_frames_are_refused() {
    let chain = |n: usize| {
        (0..n)
            .map(|i| {
                let next: Vec<usize> = (i + 1..n).take(1).collect();
                func(&format!("f{i}"), 0, &next)
            })
            .collect::<Vec<_>>()
    };
    assert!(check(&object(chain(8)), 512).1.is_empty());
    let (_, refused) = check(&object(chain(9)), 512);
    assert_eq!(
        refused,
        ["f0 (tracepoint): a call chain of 9 frames (at most 8)"]
    );
}

#[test]
fn recursion_is_refused() {
    let (rows, refused) = check(&object(vec![func("p", 0, &[1]), func("f", 8, &[1])]), 512);
    assert!(rows.is_empty());
    assert_eq!(refused, ["p: recursive calls: f -> f"]);
}

#[test]
fn short_names_drop_generics_and_keep_two_segments() {
    assert_eq!(
        short("tcptrace::hooks::io::io_update::<aya_ebpf::programs::fexit::FExitContext>"),
        "io::io_update"
    );
    assert_eq!(short("memset"), "memset");
}
