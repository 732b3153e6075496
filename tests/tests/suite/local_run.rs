//! What `deploy/local/up` leaves on disk: credentials no function process can read.

use std::os::unix::fs::PermissionsExt;

fn make_credentials(dir: &std::path::Path) -> String {
    let script = harness::repository_root().join("deploy/local/credentials");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"source "$0"; local_credentials "$1"; echo "$TASKS__AUTH__JWT_SECRET""#)
        .arg(&script)
        .arg(dir)
        .env_remove("TASKS__AUTH__JWT_SECRET")
        .env_remove("TASKS__SECRETS__KEY")
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn mode(path: std::path::PathBuf) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn local_credentials_are_readable_by_their_owner_only_and_kept() {
    let dir = std::env::temp_dir().join(format!(
        "local-credentials-{}",
        common::id::ObjectId::generate()
    ));
    let secret = make_credentials(&dir);
    assert!(secret.len() >= 32, "{secret}");
    for file in ["local-jwt-secret", "local-secrets-key"] {
        assert_eq!(mode(dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(make_credentials(&dir), secret, "made once, then kept");

    // A file an earlier version left readable by everyone is tightened.
    let old = dir.join("local-jwt-secret");
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(make_credentials(&dir), secret);
    assert_eq!(mode(old), 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}
