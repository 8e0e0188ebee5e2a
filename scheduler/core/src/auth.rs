//! API authentication: bearer tokens with scopes, and which scope each request needs. Pure.
//!
//! Scopes nest: `admin` can do what `submit` can, which can do what `read` can. Tokens are kept
//! as SHA-256 digests and compared in constant time, every configured token each time, so
//! neither a token nor which one matched leaks through timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read jobs, resources, logs, events.
    Read,
    /// Also submit, cancel and terminate jobs, put events, trigger schedules.
    Submit,
    /// Also apply resources and redrive dead letters.
    Admin,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        match text.trim() {
            "read" => Some(Scope::Read),
            "submit" => Some(Scope::Submit),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    digest: [u8; 32],
    /// The highest scope given; the ones below come with it.
    scope: Scope,
}

/// Configured tokens. Empty means the API is open (allowed only on a loopback address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Token>);

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No token, or one that is not configured: 401.
    Unauthenticated,
    /// A valid token without the scope: 403.
    Forbidden {
        has: Scope,
        needs: Scope,
    },
}

impl Tokens {
    /// Reads `SCOPE TOKEN` entries, one per line (`;` also separates entries, for an environment
    /// variable). A comment starts with `#` at the start of an entry or after a space. Anything
    /// else is refused rather than guessed at: a token is made of the characters RFC 6750 allows
    /// (letters, digits, `-._~+/=`), 16 or more of them, and an entry has exactly two fields.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (number, entry) in text.split(['\n', ';']).enumerate() {
            let entry = without_comment(entry).trim();
            if entry.is_empty() {
                continue;
            }
            let entry_error = |what: String| format!("entry {}: {what}", number + 1);
            let fields: Vec<&str> = entry.split_whitespace().collect();
            let [scope, token] = fields[..] else {
                return Err(entry_error(
                    "write it as `SCOPE TOKEN` (a comment needs a space before its #)".into(),
                ));
            };
            let scope = Scope::parse(scope).ok_or_else(|| {
                entry_error(format!(
                    "{scope:?} is not a scope; use read, submit or admin"
                ))
            })?;
            if let Some(bad) = token.chars().find(|c| !is_token_character(*c)) {
                return Err(entry_error(format!(
                    "the token contains {bad:?}, which a token cannot hold; use letters, digits and -._~+/="
                )));
            }
            if token.len() < 16 {
                return Err(entry_error(
                    "the token is shorter than 16 characters; use a long random one".into(),
                ));
            }
            tokens.push(Token {
                digest: Sha256::digest(token.as_bytes()).into(),
                scope,
            });
        }
        Ok(Tokens(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the `Authorization` header's value (if any) grants `needs`.
    /// The scope of the token `authorization` presents (the widest, if several match).
    pub fn scope_of(&self, authorization: Option<&str>) -> Option<Scope> {
        [Scope::Admin, Scope::Submit, Scope::Read]
            .into_iter()
            .find(|scope| self.check(authorization, *scope) == Access::Allowed)
    }

    pub fn check(&self, authorization: Option<&str>, needs: Scope) -> Access {
        // RFC 7235: the scheme is case-insensitive.
        let presented = authorization
            .and_then(|value| value.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| -> [u8; 32] { Sha256::digest(token.trim().as_bytes()).into() });
        let Some(presented) = presented else {
            return Access::Unauthenticated;
        };
        // Every token is compared, whatever matched, so the time taken says nothing.
        let mut granted: Option<Scope> = None;
        for token in &self.0 {
            if bool::from(token.digest.ct_eq(&presented)) {
                granted = granted.max(Some(token.scope));
            }
        }
        match granted {
            None => Access::Unauthenticated,
            Some(has) if has >= needs => Access::Allowed,
            Some(has) => Access::Forbidden { has, needs },
        }
    }
}

/// An entry without its comment: `#` at its start or after whitespace begins one; a `#` inside a
/// word is kept (and then refused as part of a token).
fn without_comment(entry: &str) -> &str {
    let mut previous_is_space = true;
    for (index, character) in entry.char_indices() {
        if character == '#' && previous_is_space {
            return &entry[..index];
        }
        previous_is_space = character.is_whitespace();
    }
    entry
}

/// RFC 6750's `b64token` characters.
fn is_token_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "-._~+/=".contains(character)
}

/// The scope a request needs, by method and path; `None` for what is open to all (`/healthz`,
/// and webhook deliveries, which prove themselves by signature).
/// Whether a request reads the web console's shell, script or style: open, as they hold no
/// data (the console's fragments are under `/ui/`, and need the read scope as any GET does).
pub fn is_console_shell(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD")
        && (path == "/"
            || path == "/console"
            || path.starts_with("/console/")
            || path.starts_with("/console-assets/"))
}

pub fn required_scope(method: &str, path: &str) -> Option<Scope> {
    if path == "/healthz"
        || path == "/metrics"
        || path == "/openapi.json"
        || path.starts_with("/v1/hooks/")
        || is_console_shell(method, path)
    {
        return None;
    }
    // Changing resources is the admin's; deleting or updating a job is the submitter's, as is
    // cancelling one.
    let admin = path == "/v1/apply"
        || path.starts_with("/v1/dlq/")
        || (matches!(method, "DELETE" | "PATCH") && !path.starts_with("/v1/jobs/"));
    Some(match method {
        "GET" | "HEAD" => Scope::Read,
        _ if admin => Scope::Admin,
        _ => Scope::Submit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const READER: &str = "reader-token-0123456789";
    const SUBMITTER: &str = "submitter-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789abc";

    fn tokens() -> Tokens {
        Tokens::parse(&format!(
            "# ci tokens\nread {READER}\nsubmit {SUBMITTER}  # the pipeline\n;admin {ADMIN}"
        ))
        .unwrap()
    }

    #[test]
    fn scopes_nest_and_requests_need_what_they_do() {
        let tokens = tokens();
        let bearer = |token: &str| format!("Bearer {token}");
        let cases = [
            (None, "GET", "/v1/jobs", Access::Unauthenticated),
            (
                Some("Basic abc".to_string()),
                "GET",
                "/v1/jobs",
                Access::Unauthenticated,
            ),
            (
                Some(bearer("not-a-configured-token")),
                "GET",
                "/v1/jobs",
                Access::Unauthenticated,
            ),
            (Some(bearer(READER)), "GET", "/v1/jobs", Access::Allowed),
            (
                Some(bearer(READER)),
                "POST",
                "/v1/jobs",
                Access::Forbidden {
                    has: Scope::Read,
                    needs: Scope::Submit,
                },
            ),
            (Some(bearer(SUBMITTER)), "POST", "/v1/jobs", Access::Allowed),
            (
                Some(bearer(SUBMITTER)),
                "POST",
                "/v1/jobs/x/terminate",
                Access::Allowed,
            ),
            (
                Some(bearer(SUBMITTER)),
                "POST",
                "/v1/apply",
                Access::Forbidden {
                    has: Scope::Submit,
                    needs: Scope::Admin,
                },
            ),
            (Some(bearer(ADMIN)), "POST", "/v1/apply", Access::Allowed),
            (
                Some(bearer(ADMIN)),
                "POST",
                "/v1/dlq/redrive",
                Access::Allowed,
            ),
            (Some(bearer(ADMIN)), "GET", "/v1/jobs", Access::Allowed),
            // Deleting a finished job is the submitter's; deleting a resource the admin's.
            (
                Some(bearer(SUBMITTER)),
                "DELETE",
                "/v1/jobs/x",
                Access::Allowed,
            ),
            (
                Some(bearer(SUBMITTER)),
                "DELETE",
                "/v1/jobqueues/q",
                Access::Forbidden {
                    has: Scope::Submit,
                    needs: Scope::Admin,
                },
            ),
            (
                Some(bearer(ADMIN)),
                "DELETE",
                "/v1/schedules/s",
                Access::Allowed,
            ),
            (
                Some(bearer(SUBMITTER)),
                "PATCH",
                "/v1/computeenvironments/ce",
                Access::Forbidden {
                    has: Scope::Submit,
                    needs: Scope::Admin,
                },
            ),
            (
                Some(bearer(SUBMITTER)),
                "PATCH",
                "/v1/jobs/x",
                Access::Allowed,
            ),
            // RFC 7235: the scheme is case-insensitive.
            (
                Some(format!("bearer {READER}")),
                "GET",
                "/v1/jobs",
                Access::Allowed,
            ),
            (
                Some(format!("BEARER {READER}")),
                "GET",
                "/v1/jobs",
                Access::Allowed,
            ),
            (
                Some(format!("Bearerx {READER}")),
                "GET",
                "/v1/jobs",
                Access::Unauthenticated,
            ),
        ];
        for (authorization, method, path, expected) in cases {
            let needs = required_scope(method, path).unwrap();
            assert_eq!(
                tokens.check(authorization.as_deref(), needs),
                expected,
                "{method} {path} {authorization:?}"
            );
        }
        assert_eq!(required_scope("GET", "/healthz"), None);
        assert_eq!(required_scope("GET", "/openapi.json"), None);
        assert_eq!(required_scope("POST", "/v1/hooks/github"), None);
        // The console's shell is open; its data is not.
        for shell in [
            "/",
            "/console",
            "/console/jobs/x",
            "/console-assets/console.js",
        ] {
            assert_eq!(required_scope("GET", shell), None, "{shell}");
        }
        assert_eq!(required_scope("GET", "/ui/jobs"), Some(Scope::Read));
        assert_eq!(required_scope("POST", "/"), Some(Scope::Submit));
    }

    #[test]
    fn bad_token_files_say_which_entry() {
        let cases = [
            ("read", "entry 1: write it as `SCOPE TOKEN`"),
            (
                "write 0123456789abcdef",
                "entry 1: \"write\" is not a scope",
            ),
            (
                "read short",
                "entry 1: the token is shorter than 16 characters",
            ),
            (
                "read 0123456789abcdef\nadmin tiny",
                "entry 2: the token is shorter",
            ),
            // Once silently truncated to the part before # or ;.
            (
                "admin 0123456789abcdef#ghijklmnop",
                "entry 1: the token contains '#'",
            ),
            (
                "admin 0123456789abcdef;ghijklmnop",
                "entry 2: write it as `SCOPE TOKEN`",
            ),
            (
                "admin 0123456789abcdef extra",
                "entry 1: write it as `SCOPE TOKEN`",
            ),
            ("read 0123456789abcdef\u{e9}", "the token contains '\u{e9}'"),
        ];
        for (text, expected) in cases {
            let error = Tokens::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(Tokens::parse("# nothing\n\n").unwrap().is_empty());
    }
}
