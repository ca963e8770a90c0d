//! Who a STOMP CONNECT is: a JWT or personal access token (in `passcode` or `Authorization`), a username and password,
//! the identity the WebSocket upgrade already established, or a guest.

use std::net::IpAddr;
use std::time::Duration;

use parley_stomp::Frame;
use tokio::time::timeout;

use crate::auth::{self, Auth, Authenticated, LoginError};

/// Longest wait for a password check (it queues behind other logins) before CONNECT fails.
const PASSWORD_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transport knows about a STOMP client before its CONNECT.
pub struct Caller {
    /// Who the WebSocket upgrade request authenticated, if anyone. Boxed: every connection
    /// keeps its caller, and most have none.
    pub pre: Option<Box<Authenticated>>,
    /// The client's address, for login throttling.
    pub peer: IpAddr,
}

/// Decides who a CONNECT frame is. `Err` is the ERROR frame's message.
pub(super) async fn authenticate(
    auth: &Auth,
    frame: &Frame,
    caller: &Caller,
) -> Result<Authenticated, String> {
    let failed = |why: &str| format!("authentication failed: {why}");
    let login = frame.get("login").filter(|l| !l.is_empty());
    let passcode = frame.get("passcode").filter(|p| !p.is_empty());
    let bearer = frame
        .get("Authorization")
        .or_else(|| frame.get("authorization"))
        .and_then(auth::bearer_value);
    let token = bearer
        .or(passcode.filter(|p| auth::looks_like_jwt(p) || auth::looks_like_personal_token(p)));
    if let Some(token) = token {
        let authenticated = auth.verify_any(token).await.map_err(|e| failed(&e))?;
        if login.is_some_and(|l| l != &*authenticated.identity.name) {
            return Err(failed("login does not match the token's user"));
        }
        return Ok(authenticated);
    }
    match (login, passcode) {
        (Some(login), Some(password)) => {
            let check = auth.check_password(login, password, caller.peer);
            match timeout(PASSWORD_CHECK_TIMEOUT, check).await {
                Ok(Ok(())) => Ok(auth.session_for(login)),
                Ok(Err(LoginError::Invalid)) => Err(failed("invalid username or password")),
                Ok(Err(e)) => Err(failed(&e.to_string())),
                Err(_) => Err(failed("the server is busy; try again")),
            }
        }
        (name, None) => match caller.pre.as_deref() {
            // The upgrade request already said who this is.
            Some(pre) if name.is_none_or(|n| n == &*pre.identity.name) => Ok(pre.clone()),
            _ => auth.guest(name).await.map_err(|e| failed(&e)),
        },
        (None, Some(_)) => Err(failed("passcode without login is not a token")),
    }
}
