//! Builds the eBPF programs (nstrace-ebpf) with the nightly toolchain and
//! bpf-linker, so that `include_bytes_aligned!` can embed the object.
//! `cargo xtask setup` installs what this needs; `AYA_BUILD_SKIP=1` skips it.

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "nstrace-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../nstrace-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
