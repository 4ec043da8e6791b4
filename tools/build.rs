include!("../torch-rpath.rs");

fn main() {
    link_libtorch();
}
