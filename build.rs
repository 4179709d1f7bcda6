//! Records the target triple so `py-spy --version` can say what it was built for.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=PY_SPY_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
