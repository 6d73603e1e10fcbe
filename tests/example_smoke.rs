//! Runs the example controller on its embedded in-memory source, as a new user would.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::etcd::EtcdServer;

/// Returns the path of a built example, next to this test's binary.
fn example_binary(name: &str) -> Option<PathBuf> {
    let test_binary = std::env::current_exe().ok()?;
    let profile_dir = test_binary.parent()?.parent()?;
    let path = profile_dir.join("examples").join(name);
    path.exists().then_some(path)
}

/// Skips a test whose example binary is missing, except in CI, where a missing binary is a
/// failure: `scripts/test.sh` builds the examples first.
fn skip_or_fail() {
    let message = "the example binary is not built; run `cargo build --examples` first";
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
}

#[test]
fn config_watcher_recovers_on_memory_source() {
    let Some(binary) = example_binary("etcd_config_watcher") else {
        skip_or_fail();
        return;
    };
    let output = Command::new(binary)
        .args(["--run-for", "15", "--status-every", "2"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("run the example");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit status {}; log:\n{log}",
        output.status
    );

    let has = |needle: &str| log.contains(needle);
    assert!(
        has("applied list"),
        "the first list is applied; log:\n{log}"
    );
    assert!(has("reconciled"), "keys are reconciled; log:\n{log}");
    assert!(
        has("reconciled a deleted key"),
        "deletes reach the reconciler; log:\n{log}"
    );
    assert!(
        has("failed to decode"),
        "the invalid value is reported; log:\n{log}"
    );
    assert!(has("status"), "status lines are logged; log:\n{log}");
    assert!(
        has("relisting"),
        "the compaction leads to a relist; log:\n{log}"
    );
    assert_eq!(
        log.matches("applied list").count(),
        2,
        "exactly one relist after the first list; log:\n{log}"
    );
    assert!(
        has("controller stopped"),
        "shutdown is graceful; log:\n{log}"
    );
}

#[test]
fn config_watcher_names_invalid_flags() {
    let Some(binary) = example_binary("etcd_config_watcher") else {
        skip_or_fail();
        return;
    };
    // The port is never contacted: each case fails before the example connects.
    let cases: [(&[&str], &str); 3] = [
        (
            &["--endpoints", "http://127.0.0.1:9", "--prefix", ""],
            "--prefix is empty",
        ),
        (&["--endpoints", "https://127.0.0.1:9"], "pass --cacert"),
        (
            &["--endpoints", "http://127.0.0.1:9", "--cacert", "ca.pem"],
            "drop --cacert",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(&binary)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run the example");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: stderr:\n{stderr}");
        assert!(
            !stderr.contains("EtcdConfig"),
            "{args:?}: the message names flags, not library items: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watcher_runs_against_etcd() {
    let Some(binary) = example_binary("etcd_config_watcher") else {
        skip_or_fail();
        return;
    };
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    client
        .put("/config/api", r#"{"replicas":3}"#, None)
        .await
        .unwrap();

    let child = tokio::process::Command::new(binary)
        .args(["--endpoints", &server.endpoint(), "--prefix", "/config/"])
        .args(["--run-for", "6", "--status-every", "1", "--decode", "json"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .put("/config/web", r#"{"replicas":5}"#, None)
        .await
        .unwrap();
    client.delete("/config/api", None).await.unwrap();

    let output = child.wait_with_output().await.expect("the example exits");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit status {}; log:\n{log}",
        output.status
    );
    assert!(
        log.contains("/config/api"),
        "the listed key is reconciled; log:\n{log}"
    );
    assert!(
        log.contains("replicas=5"),
        "the written key is reconciled; log:\n{log}"
    );
    assert!(
        log.contains("reconciled a deleted key"),
        "the delete is reconciled; log:\n{log}"
    );
    assert!(
        log.contains("in_sync=true"),
        "status lines show readiness; log:\n{log}"
    );
}
