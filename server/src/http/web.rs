//! The browser chat client (`web-client/`), embedded into the binary at build time so running
//! the server needs no npm and no files next to it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// Also what browsers insist on for ES modules (`<script type="module">`, `import`).
const JS: &str = "text/javascript; charset=utf-8";

/// `web-client/<file>` served at `/<file>`.
macro_rules! web_file {
    ($file:literal, $content_type:expr) => {
        (
            concat!("/", $file),
            $content_type,
            include_bytes!(concat!("../../../web-client/", $file)),
        )
    };
}

/// Path, content type, contents. Every module the page imports must be here: a 404 on one
/// stops the whole client (the `imports_are_served` test checks).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../../../web-client/index.html")),
    // The operators' page (the admin API decides who may use it).
    (
        "/admin",
        HTML,
        include_bytes!("../../../web-client/admin.html"),
    ),
    web_file!("admin.css", CSS),
    web_file!("admin.js", JS),
    web_file!("style.css", CSS),
    web_file!("vendor/stomp.umd.min.js", JS),
    // SockJS, the fallback when no WebSocket gets through; the SockJS iframe page loads it too.
    web_file!("vendor/sockjs.min.js", JS),
    web_file!("main.js", JS),
    web_file!("api.js", JS),
    web_file!("connection.js", JS),
    web_file!("dialogs.js", JS),
    web_file!("dms.js", JS),
    web_file!("dom.js", JS),
    web_file!("edits.js", JS),
    web_file!("events.js", JS),
    web_file!("format.js", JS),
    web_file!("mentions.js", JS),
    web_file!("messages.js", JS),
    web_file!("msgparts.js", JS),
    web_file!("navigation.js", JS),
    web_file!("notify.js", JS),
    web_file!("people.js", JS),
    web_file!("outbox.js", JS),
    web_file!("providers.js", JS),
    web_file!("render.js", JS),
    web_file!("rooms.js", JS),
    web_file!("session.js", JS),
    web_file!("signin.js", JS),
    web_file!("state.js", JS),
    web_file!("tokens.js", JS),
    web_file!("transport/socket.js", JS),
    web_file!("transport/stomp.js", JS),
    web_file!("unread.js", JS),
];

/// The embedded file at `path`, if there is one.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; revalidating costs little and avoids stale clients.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spec` (`./x.js`, `../x.js` or `/x.js`) as imported by the file at `from` (`/dir/y.js`).
    fn resolve(from: &str, spec: &str) -> String {
        if spec.starts_with('/') {
            return spec.to_owned();
        }
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop(); // the importing file's own name
        for part in spec.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                _ => parts.push(part),
            }
        }
        parts.join("/")
    }

    /// The quoted specifiers of `from '…'` and `import '…'` in a module's text.
    fn imports(text: &str) -> Vec<String> {
        let mut specs = Vec::new();
        for marker in ["from '", "import '", "from \"", "import \""] {
            let quote = marker.chars().last().unwrap();
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                if let Some(end) = rest.find(quote) {
                    specs.push(rest[..end].to_owned());
                }
            }
        }
        specs
    }

    #[test]
    fn imports_are_served() {
        let served = |path: &str| ASSETS.iter().any(|(p, _, _)| *p == path);
        let html = std::str::from_utf8(asset_body("/")).unwrap();
        let mut checked = 0;
        for attr in ["src=\"", "href=\""] {
            for (at, _) in html.match_indices(attr) {
                let rest = &html[at + attr.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                if target.starts_with('/') {
                    assert!(
                        served(target),
                        "index.html refers to {target}, which is not served"
                    );
                    checked += 1;
                }
            }
        }
        assert!(served("/main.js") && html.contains(r#"<script type="module" src="/main.js">"#));
        for (path, content_type, body) in ASSETS {
            if *content_type != JS || path.starts_with("/vendor/") {
                continue;
            }
            let text = std::str::from_utf8(body).unwrap();
            for spec in imports(text) {
                let target = resolve(path, &spec);
                assert!(
                    served(&target),
                    "{path} imports {spec} ({target}), which is not served"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 20,
            "only {checked} references found: is the scan still right?"
        );
    }

    fn asset_body(path: &str) -> &'static [u8] {
        ASSETS.iter().find(|(p, _, _)| *p == path).unwrap().2
    }

    #[test]
    fn modules_are_javascript() {
        let resp = asset("/transport/stomp.js").unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], JS);
        assert!(asset("/app.js").is_none());
    }
}
