//! The control plane is torn down when its test binary panics: processes stopped, files removed.

use std::time::Duration;

#[tokio::test]
async fn a_panicking_test_binary_leaves_no_process_and_no_files() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane-then-panic"))
        .output()
        .await
        .expect("helper runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the helper must panic");
    assert!(stderr.contains("deliberate panic"), "{stderr}");

    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dir="))
        .expect("dir printed");
    let pids: Vec<u32> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("pid=")?.parse().ok())
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager: {stdout}"
    );

    // The reaper works after the helper is gone; give it the time SIGTERM needs.
    verbund_tests::wait::until(Duration::from_secs(20), "control plane torn down", || {
        let dir = std::path::PathBuf::from(dir);
        let pids = pids.clone();
        async move {
            let alive: Vec<u32> = pids
                .into_iter()
                .filter(|pid| {
                    // A zombie awaiting its reaper counts as gone: it runs no code.
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|stat| !stat.contains(") Z "))
                })
                .collect();
            if alive.is_empty() && !dir.exists() {
                Ok(())
            } else {
                Err(format!("alive: {alive:?}, dir exists: {}", dir.exists()))
            }
        }
    })
    .await;
}
