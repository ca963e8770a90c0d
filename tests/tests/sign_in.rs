//! Signing in with another site, where no provider is needed to show it: sign-in callbacks are
//! bounded per client address (each one that carries a genuine state records it in storage),
//! and a forged state cookie never reaches that far. The flows through a real provider are in
//! tests/interop/js/oauth*.test.mjs and tests/e2e/oauth.test.mjs.

use std::net::SocketAddr;

use parley_tests::http::{get, Response};
use parley_tests::{fresh_data_dir, ServerProcess};

/// A plain OAuth 2.0 provider whose endpoints refuse connections (port 9 on loopback): every
/// code exchange fails fast with "could not be reached".
fn server(extra: &[&str]) -> ServerProcess {
    let data = fresh_data_dir();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("client-secret"), "s").unwrap();
    let secret = data.join("client-secret");
    let provider = format!(
        "name=gone,label=Gone,authorize-url=http://127.0.0.1:9/authorize,\
         token-url=http://127.0.0.1:9/token,userinfo-url=http://127.0.0.1:9/me,\
         client-id=parley,client-secret-file={}",
        secret.display()
    );
    let mut args = vec![
        "--auth-provider",
        provider.as_str(),
        "--provider-timeout",
        "2s",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_strict_with_data(&data, &args)
}

/// Starts a sign-in: the state cookie (`name=value`) and the `state` sent to the provider.
async fn start(addr: SocketAddr) -> (String, String) {
    let resp = get(addr, "/auth/gone/login", &[]).await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    let location = resp.header("location").unwrap().to_owned();
    assert!(
        location.starts_with("http://127.0.0.1:9/authorize?"),
        "{location}"
    );
    let state = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_owned();
    let cookie = resp
        .header_values("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("parley_oauth="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (cookie, state)
}

async fn callback(addr: SocketAddr, cookie: &str, state: &str) -> Response {
    let path = format!("/auth/gone/callback?code=c&state={state}");
    get(addr, &path, &[("Cookie", cookie)]).await
}

fn words(resp: &Response) -> String {
    let text = resp.text();
    let start = text.find("<p id=\"auth-error\">").expect("an error page") + 19;
    text[start..].split("</p>").next().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_callbacks_are_bounded_per_address_and_forged_states_stop_before_storage() {
    let server = server(&["--sign-ins-per-ip", "3"]);
    let addr = server.addr();
    // A forged cookie (a state this server never sealed) is refused and not counted.
    for _ in 0..5 {
        let (_, state) = start(addr).await;
        let forged = format!("parley_oauth={state}.AAAA");
        let resp = callback(addr, &forged, &state).await;
        assert_eq!(resp.status, 400);
        assert!(
            words(&resp).contains("did not start here"),
            "{}",
            words(&resp)
        );
    }
    // Genuine ones count, whatever their outcome: the provider cannot be reached (in words),
    // a replay of a used state is refused, another genuine one; then the bound.
    let (cookie, state) = start(addr).await;
    let resp = callback(addr, &cookie, &state).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        words(&resp).contains("could not be reached"),
        "{}",
        words(&resp)
    );
    let replay = callback(addr, &cookie, &state).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    assert!(
        words(&replay).contains("did not start here"),
        "{}",
        words(&replay)
    );
    let (cookie, state) = start(addr).await;
    assert_eq!(callback(addr, &cookie, &state).await.status, 502);
    let (cookie, state) = start(addr).await;
    let resp = callback(addr, &cookie, &state).await;
    assert_eq!(resp.status, 429, "{}", resp.text());
    assert!(
        words(&resp).contains("Too many sign-ins"),
        "{}",
        words(&resp)
    );
    // Everything else keeps working for this address.
    assert_eq!(get(addr, "/api/auth/providers", &[]).await.status, 200);
}
