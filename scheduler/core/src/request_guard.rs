//! Whether a request may come from a web browser's page: the API is for programs (the CLI,
//! pipelines), so no page of another site may drive it — neither by a cross-site form or
//! `fetch` (CSRF), nor by a host name that resolves to the server (DNS rebinding). Pure.
//!
//! The rules, checked before authentication (an open laptop server has no token to protect it):
//! - On a loopback address, `Host` must name a loopback host (`localhost`, `127.0.0.0/8`,
//!   `[::1]`) and the port the server listens on: a rebinding name is refused.
//! - A request carrying `Origin` must come from the server's own origin (the `Host` it was sent
//!   to); `Sec-Fetch-Site: cross-site` or `same-site` is refused likewise, except for opening
//!   the web console's shell, which holds no data (a link to it from elsewhere works; what it
//!   fetches then is same-origin). No CORS headers are
//!   ever sent, so a page cannot read answers either.
//! - A request with a body (POST, PATCH) must say
//!   `Content-Type: application/json`: the types a page may send without a preflight
//!   (`text/plain`, forms) are refused. Webhook deliveries (`/v1/hooks/…`) are exempt: third
//!   parties send what they send, and their signature proves them.

use std::net::{IpAddr, SocketAddr};

/// What the guard needs of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// Why a request is refused (403, or 415 for the content type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` does not name this loopback server.
    ForeignHost(String),
    /// A page of another origin sent it.
    CrossOrigin(String),
    /// A changing request whose body is not declared JSON.
    NotJson(Option<String>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ForeignHost(host) => write!(
                f,
                "Host {host:?} does not name this server: a server on a loopback address answers only to localhost, 127.0.0.1 or [::1] with its port"
            ),
            Refusal::CrossOrigin(origin) => write!(
                f,
                "requests from web pages of other origins ({origin}) are refused: the API is for programs; call it from the CLI or a backend"
            ),
            Refusal::NotJson(Some(content_type)) => write!(
                f,
                "Content-Type {content_type:?} is not accepted: send the body as JSON with Content-Type: application/json"
            ),
            Refusal::NotJson(None) => write!(
                f,
                "Content-Type is missing: send the body as JSON with Content-Type: application/json"
            ),
        }
    }
}

pub fn check(request: &RequestFacts<'_>, listening: SocketAddr) -> Result<(), Refusal> {
    if listening.ip().is_loopback() {
        if let Some(host) = request.host {
            if !names_loopback(host, listening.port()) {
                return Err(Refusal::ForeignHost(host.to_string()));
            }
        }
    }
    if let Some(origin) = request.origin {
        let same = request
            .host
            .is_some_and(|host| origin_authority(origin) == Some(host));
        if !same {
            return Err(Refusal::CrossOrigin(origin.to_string()));
        }
    }
    // A link from another site may open the console's shell (it holds no data; what it then
    // fetches is same-origin and carries the token).
    let shell = crate::auth::is_console_shell(request.method, request.path);
    if let Some(site) = request.sec_fetch_site.filter(|_| !shell) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(Refusal::CrossOrigin(format!("Sec-Fetch-Site: {site}")));
        }
    }
    // Only what carries a body: a DELETE has none, and methods the API does not serve (PUT,
    // TRACE, …) are answered 405 by the router.
    let has_body = matches!(request.method, "POST" | "PATCH");
    if has_body && !request.path.starts_with("/v1/hooks/") && !is_json(request.content_type) {
        return Err(Refusal::NotJson(request.content_type.map(str::to_string)));
    }
    Ok(())
}

/// `application/json` or `application/…+json`, with any parameters.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether `host` (a `Host` header: name or address, then `:port`) names a loopback host with
/// this port.
fn names_loopback(host: &str, port: u16) -> bool {
    let (name, host_port) = match host.rsplit_once(':') {
        // `[::1]:7700`, `localhost:7700`; a bare `::1` has colons but no brackets.
        Some((name, host_port)) if !name.contains(':') || name.ends_with(']') => {
            (name, Some(host_port))
        }
        _ => (host, None),
    };
    // Without a port the client means the scheme's default, 80.
    let port_matches = host_port.map_or(port == 80, |p| p.parse::<u16>().ok() == Some(port));
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback && port_matches
}

/// `http://host:port` → `host:port` (what the `Host` header of a same-origin request holds).
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_facts(
        method: &str,
        path: &str,
        host: Option<&str>,
        origin: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<(), Refusal> {
        let facts = RequestFacts {
            method,
            path,
            host,
            origin,
            sec_fetch_site: None,
            content_type,
        };
        check(&facts, "127.0.0.1:7700".parse().unwrap())
    }

    #[test]
    fn pages_of_other_sites_cannot_drive_a_loopback_server() {
        let json = Some("application/json");
        let here = Some("127.0.0.1:7700");
        /// Method, path, Host, Origin, Content-Type, and whether the request passes.
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            bool,
        );
        let cases: &[Case] = &[
            // The CLI and curl: no Origin, JSON.
            ("POST", "/v1/jobs", here, None, json, true),
            ("POST", "/v1/jobs", Some("localhost:7700"), None, json, true),
            ("POST", "/v1/jobs", Some("[::1]:7700"), None, json, true),
            ("POST", "/v1/jobs", Some("127.0.0.2:7700"), None, json, true),
            (
                "POST",
                "/v1/jobs",
                here,
                None,
                Some("application/json; charset=utf-8"),
                true,
            ),
            ("GET", "/v1/jobs", here, None, None, true),
            // A cross-site form or fetch without preflight.
            ("POST", "/v1/apply", here, None, Some("text/plain"), false),
            (
                "POST",
                "/v1/jobs",
                here,
                None,
                Some("application/x-www-form-urlencoded"),
                false,
            ),
            ("POST", "/v1/jobs/x/terminate", here, None, None, false),
            (
                "PATCH",
                "/v1/jobqueues/q",
                here,
                None,
                Some("text/plain"),
                false,
            ),
            // No body: nothing to declare (a page cannot send a DELETE without a preflight,
            // which the API never grants); methods it does not serve reach the router's 405.
            ("DELETE", "/v1/jobs/x", here, None, None, true),
            ("TRACE", "/v1/jobs", here, None, None, true),
            // A page of another origin, even sending JSON.
            (
                "POST",
                "/v1/jobs",
                here,
                Some("http://evil.example"),
                json,
                false,
            ),
            (
                "GET",
                "/v1/jobs",
                here,
                Some("http://evil.example"),
                None,
                false,
            ),
            // The server's own origin.
            (
                "POST",
                "/v1/jobs",
                here,
                Some("http://127.0.0.1:7700"),
                json,
                true,
            ),
            // DNS rebinding: the page's own name resolving to 127.0.0.1.
            (
                "POST",
                "/v1/jobs",
                Some("evil.example:7700"),
                Some("http://evil.example:7700"),
                json,
                false,
            ),
            (
                "GET",
                "/v1/jobs",
                Some("evil.example:7700"),
                None,
                None,
                false,
            ),
            ("GET", "/v1/jobs", Some("127.0.0.1:8080"), None, None, false),
            ("GET", "/v1/jobs", Some("127.0.0.1"), None, None, false),
            // Webhooks may be form-encoded; their signature proves them.
            (
                "POST",
                "/v1/hooks/github",
                here,
                None,
                Some("application/x-www-form-urlencoded"),
                true,
            ),
        ];
        for (method, path, host, origin, content_type, allowed) in cases {
            assert_eq!(
                check_facts(method, path, *host, *origin, *content_type).is_ok(),
                *allowed,
                "{method} {path} host={host:?} origin={origin:?} type={content_type:?}"
            );
        }
    }

    #[test]
    fn a_server_off_loopback_takes_any_host_but_no_foreign_origin() {
        let listening: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        let facts = RequestFacts {
            method: "GET",
            path: "/v1/jobs",
            host: Some("batch.internal:7700"),
            ..Default::default()
        };
        assert!(check(&facts, listening).is_ok());
        let cross = RequestFacts {
            sec_fetch_site: Some("cross-site"),
            ..facts
        };
        assert!(matches!(
            check(&cross, listening),
            Err(Refusal::CrossOrigin(_))
        ));
        // A link from another site may open the console's shell, not its data.
        for path in ["/", "/console/jobs/x", "/console-assets/console.js"] {
            assert!(
                check(&RequestFacts { path, ..cross }, listening).is_ok(),
                "{path}"
            );
        }
        for path in ["/ui/jobs", "/v1/jobs"] {
            assert!(
                check(&RequestFacts { path, ..cross }, listening).is_err(),
                "{path}"
            );
        }
        let post = RequestFacts {
            method: "POST",
            path: "/",
            content_type: Some("application/json"),
            ..cross
        };
        assert!(check(&post, listening).is_err());
    }
}
