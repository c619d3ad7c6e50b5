//! Which web pages may open a WebSocket to this service (PROTOCOL.md §12): a browser sends the
//! page's `Origin` with every upgrade, so a page on another site cannot make its visitors'
//! browsers draw here. Requests without an `Origin` (programs, the CLI) are not concerned;
//! tokens are what protect against those.

/// `--allowed-origins`: the service's own origin always, plus these.
#[derive(Clone, Debug, Default)]
pub(crate) struct AllowedOrigins {
    /// Exact origins (`https://app.example.com`, lower case, no trailing slash).
    origins: Vec<String>,
    /// `*`: any origin.
    any: bool,
}

impl AllowedOrigins {
    pub(crate) fn new(listed: &[String]) -> Self {
        let mut allowed = AllowedOrigins::default();
        for origin in listed {
            let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
            if origin == "*" {
                allowed.any = true;
            } else if !origin.is_empty() {
                allowed.origins.push(origin);
            }
        }
        allowed
    }

    /// Whether an upgrade with `Origin: origin` (if any) that came for `Host: host` may go on.
    pub(crate) fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.any {
            return true;
        }
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        // The same origin: the page was served by this host (the scheme is the proxy's
        // business; the host and port are what a foreign page cannot fake in a browser).
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        match (authority, host) {
            (Some(authority), Some(host)) => authority == host.trim().to_ascii_lowercase(),
            _ => false,
        }
    }
}

/// Parses `--allowed-origins` entries: `*` or `scheme://host[:port]`.
pub(crate) fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(text.to_string());
    }
    match text.split_once("://") {
        Some((scheme, host))
            if !scheme.is_empty()
                && !host.is_empty()
                && !host.trim_end_matches('/').contains('/') =>
        {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text:?} is not an origin (scheme://host[:port], e.g. https://app.example.com, or *)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_listed_origins_and_programs_pass_foreign_pages_do_not() {
        let only_self = AllowedOrigins::new(&[]);
        let host = Some("raster.example.com:8080");
        // A program: no Origin.
        assert!(only_self.allows(None, host));
        // The page this service served.
        assert!(only_self.allows(Some("http://raster.example.com:8080"), host));
        assert!(only_self.allows(Some("https://Raster.Example.com:8080"), host));
        // Another site, another port, or a page with an opaque origin.
        assert!(!only_self.allows(Some("https://evil.example"), host));
        assert!(!only_self.allows(Some("http://raster.example.com:9999"), host));
        assert!(!only_self.allows(Some("null"), host));
        assert!(!only_self.allows(Some("https://raster.example.com:8080"), None));

        let listed = AllowedOrigins::new(&["https://app.example.com/".to_string()]);
        assert!(listed.allows(Some("https://app.example.com"), host));
        assert!(!listed.allows(Some("http://app.example.com"), host));
        assert!(AllowedOrigins::new(&["*".to_string()]).allows(Some("null"), host));
    }

    #[test]
    fn origins_are_parsed_strictly() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000/").is_ok());
        assert!(parse_origin("*").is_ok());
        for bad in ["app.example.com", "https://", "https://a.example/path", ""] {
            assert!(parse_origin(bad).is_err(), "{bad:?} accepted");
        }
    }
}
