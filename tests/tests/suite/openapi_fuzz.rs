//! The served OpenAPI document, fuzzed with schemathesis against a real scheduler and worker:
//! no 5xx, and no response the document does not describe (see tests/schemathesis/run).

use harness::{TestScheduler, all_permissions, repository_root, token};

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    let app = TestScheduler::start().await;
    let _worker = app.start_worker(2).await;
    let output = tokio::process::Command::new(repository_root().join("tests/schemathesis/run"))
        .arg(&app.base_url)
        .arg(token(&all_permissions()))
        .output()
        .await
        .expect("tests/schemathesis/run starts");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(
        report.contains("Test cases:") && !report.contains("0 generated"),
        "schemathesis ran no test case:\n{report}"
    );
}
