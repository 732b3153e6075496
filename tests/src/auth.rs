//! What tests authenticate with: the secrets test services are configured with, tokens
//! holding chosen permissions, and clients that send them.

/// The HS256 secret of test schedulers.
pub const TEST_SECRET: &str = "test-secret-of-the-task-service-suite";
/// The key test schedulers and workers seal environment variables with.
pub const TEST_SECRETS_KEY: &str = "test:dGVzdC1rZXktb2YtdGhlLXRhc2stc2VydmljZS0zMmI=";
/// The user every test token names.
pub const TEST_USER: &str = "5f0c9b6e2a1d4c3b2a190807";
/// The application every test token names.
pub const TEST_APPLICATION: &str = "6a1b2c3d4e5f6a7b8c9d0e1f";

/// A token for [`TEST_USER`] of [`TEST_APPLICATION`] holding these permissions.
pub fn token(permissions: &[String]) -> String {
    scheduler::api::auth::jwt::mint(
        TEST_SECRET,
        &scheduler::api::auth::jwt::Claims {
            sub: TEST_USER.to_owned(),
            application_id: Some(TEST_APPLICATION.to_owned()),
            permissions: permissions.to_vec(),
            exp: chrono::Utc::now().timestamp() as u64 + 3600,
            iat: None,
        },
    )
    .expect("token minted")
}

pub fn all_permissions() -> Vec<String> {
    scheduler::api::auth::token::all_permissions()
}

/// An HTTP client sending this bearer token with every request.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(CLIENT_IDLE_TIMEOUT)
        .build()
        .expect("http client")
}

/// How long test clients keep an idle connection: less than the scheduler's header timeout
/// (10 s), which also closes idle connections, so no request goes out on one as it closes.
pub const CLIENT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
