include!("../torch-rpath.rs");

fn main() {
    link_libtorch();
    gst_plugin_version_helper::info();
}
