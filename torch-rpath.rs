// Shared build-script helper, `include!`d by every package that links libtorch.
// tch does not set an rpath, so binaries, tests and cdylibs would need LD_LIBRARY_PATH.
// torch-sys (a direct dependency of each such package) exports its lib dir as DEP_TCH_LIBTORCH_LIB.
fn link_libtorch() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // tch links only libtorch_cpu for its own targets; CUDA needs libtorch_cuda to stay linked.
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
