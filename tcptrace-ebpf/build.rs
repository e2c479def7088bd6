//! Declares the `bpf_target_arch` cfg (aya-build passes it when building for
//! bpfel), and rebuilds the eBPF object when bpf-linker changes (a new LLVM
//! can change the code it emits).
use which::which;

fn main() -> aya_build::Result<()> {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    aya_build::emit_bpf_target_arch_cfg()
}
