//! The SSE room feed's request (`GET /api/rooms/<room>/events`): who is calling (also by
//! `?access_token=`, as EventSource sends no headers), whether they may read the room, and where
//! to resume. What the feed streams is `endpoints::sse`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{error, refused, Api, Refused};
use crate::auth::Authenticated;
use crate::endpoints::sse;
use crate::endpoints::streaming::{stream, whole, Reply, Streamed};

impl Api<'_> {
    /// `GET /api/rooms/<room>/events`: the room's feed, or the answer refusing it.
    pub(super) async fn room_feed(&self, req: &Request<Incoming>, room: &str) -> Response<Reply> {
        match self.open_feed(req, room).await {
            Ok(feed) => stream(feed),
            Err(resp) => whole(resp),
        }
    }

    async fn open_feed(
        &self,
        req: &Request<Incoming>,
        room: &str,
    ) -> Result<Response<Streamed>, Refused> {
        let who = self.feed_caller(req).await?;
        // The history API's answers for a bad name (400) and a private room (403).
        self.hub
            .usable_room(&who.identity, room)
            .map_err(|refusal| refused(&refusal))?;
        // A GET creates nothing: a raw join by an account would create the room.
        if !self.hub.acl().exists(room) {
            return Err(error(StatusCode::NOT_FOUND, "no such room"));
        }
        let since = resume_after(req).map_err(|()| {
            let why = "Last-Event-ID and since are message ids";
            error(StatusCode::BAD_REQUEST, why)
        })?;
        let chat = self.chat.clone();
        let shutdown = self.shutdown.clone();
        sse::open(
            self.hub, chat, self.feed, shutdown, who, room, since, self.peer,
        )
        .await
        .map_err(|refusal| refused(&refusal))
    }

    /// The caller of a feed: a token (header or query) or the session cookie, else a guest
    /// where guests are allowed (the history API lets them read too); guests need a name in the
    /// room, so one is made (`guest-<n>`), as for a raw guest without `?name=`.
    async fn feed_caller(&self, req: &Request<Incoming>) -> Result<Authenticated, Refused> {
        if let Some(who) = self.authenticated(req, req.uri().query()).await? {
            return Ok(who);
        }
        if !self.auth.settings().allow_guests {
            return Err(error(StatusCode::UNAUTHORIZED, "sign in first"));
        }
        self.auth
            .guest(None)
            .await
            .map_err(|why| error(StatusCode::UNAUTHORIZED, &why))
    }
}

/// Where a feed resumes: after the `Last-Event-ID` a reconnecting EventSource sends, else after
/// `?since=`, else nowhere (live from now). The header wins: EventSource reconnects to the same
/// URL, whose `since` is where the first connection started. `Err`: not a message id.
fn resume_after(req: &Request<Incoming>) -> Result<Option<u64>, ()> {
    let header = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").trim())
        .filter(|v| !v.is_empty());
    let query = req.uri().query().unwrap_or_default();
    let since = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="));
    header.or(since).map(str::parse).transpose().map_err(drop)
}
