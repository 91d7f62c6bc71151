//! Picks the board's `memory.x` and copies the model, images and expected classes named by
//! environment variables into OUT_DIR, where `include_bytes!` finds them.

use std::env;
use std::fs;
use std::path::PathBuf;

/// Files the firmware embeds: (environment variable, name in OUT_DIR).
const INPUTS: [(&str, &str); 3] = [
    // A .pdn model file, f32 or int8 (`picodense export`).
    ("PICODENSE_FW_MODEL", "model.pdn"),
    // N images of `inputs` u8 pixels each, then N u8 labels.
    ("PICODENSE_FW_IMAGES", "images.bin"),
    // Optional: N u8 classes the firmware must predict (else it only reports accuracy).
    ("PICODENSE_FW_EXPECTED", "expected.bin"),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let board = |name: &str| env::var_os(format!("CARGO_FEATURE_BOARD_{name}")).is_some();
    let memory = match (board("AN386"), board("NETDUINO"), board("MICROBIT")) {
        (true, false, false) => "memory-an386.x",
        (false, true, false) => "memory-netduino.x",
        (false, false, true) => "memory-microbit.x",
        _ => panic!(
            "select exactly one board: --features board-an386, board-netduino or board-microbit"
        ),
    };
    fs::copy(memory, out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={memory}");

    for (var, name) in INPUTS {
        println!("cargo:rerun-if-env-changed={var}");
        let dst = out.join(name);
        match env::var_os(var) {
            Some(src) => {
                println!("cargo:rerun-if-changed={}", src.to_string_lossy());
                if let Err(e) = fs::copy(&src, &dst) {
                    panic!("{var}={}: {e}", src.to_string_lossy());
                }
            }
            None => {
                // Still builds (for clippy, size checks); the firmware reports what is missing.
                if var != "PICODENSE_FW_EXPECTED" {
                    println!("cargo:warning={var} is not set: the firmware will have no {name}");
                }
                fs::write(&dst, []).expect("write empty input");
            }
        }
    }
}
