//! Starts a test control plane, prints where it lives, then panics: the test
//! `teardown.rs` runs this to prove that nothing is left behind after a panic.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cp = verbund_tests::control_plane::shared().await;
    println!("dir={}", cp.dir().display());
    for pid in cp.process_ids() {
        println!("pid={pid}");
    }
    panic!("deliberate panic with a running control plane");
}
