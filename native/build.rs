//! Sets the linker flags a Node addon needs (napi's symbols are resolved at load time).
fn main() {
    napi_build::setup();
}
