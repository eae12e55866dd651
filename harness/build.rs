//! Builds `standin/udp_answer.rs` into a statically linked program, which `src/images.rs` copies
//! into the serving stand-in images (busybox has no UDP server, and the images have no libc).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "standin/udp_answer.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("udp-answer");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET");
    let status = Command::new(rustc)
        .args(["--edition", "2021", "-O", "-C", "panic=abort", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static", "--target", &target])
        .arg(source)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run rustc for standin/udp_answer.rs");
    assert!(status.success(), "building standin/udp_answer.rs (statically linked) failed");
}
