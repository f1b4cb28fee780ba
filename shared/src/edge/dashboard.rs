//! `GET /dashboard`: one self-contained page (`dashboard.html`, inline style and script) that
//! reads the read routes with the caller's credentials and draws them as SVG. The page holds
//! no data, so it is served without a tenant; its Content-Security-Policy lets it run only its
//! own inline script and style (by their SHA-256) and fetch only from its own origin.

use std::sync::OnceLock;

use lambda_http::{Body, Response};
use sha2::{Digest, Sha256};

use crate::domain::detector::layer::base64_encode;

/// The page, as built into the binary.
pub const PAGE: &str = include_str!("dashboard.html");

/// The `'sha256-…'` sources of every inline `<tag>…</tag>` block of `html`.
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut hashes = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start..];
        let Some(body_start) = after.find('>') else {
            break;
        };
        let Some(body_len) = after[body_start + 1..].find(&close) else {
            break;
        };
        let body = &after[body_start + 1..body_start + 1 + body_len];
        hashes.push(format!(
            "'sha256-{}'",
            base64_encode(&Sha256::digest(body.as_bytes()))
        ));
        rest = &after[body_start + 1 + body_len + close.len()..];
    }
    hashes
}

/// The page's Content-Security-Policy: nothing from anywhere but its own inline script and
/// style, and requests to its own origin.
pub fn content_security_policy(html: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hashes(html, "script").join(" "),
        inline_hashes(html, "style").join(" "),
    )
}

/// The page with its headers.
pub fn response() -> Response<Body> {
    static POLICY: OnceLock<String> = OnceLock::new();
    let policy = POLICY.get_or_init(|| content_security_policy(PAGE));
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-security-policy", policy.as_str())
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-cache")
        .body(Body::Text(PAGE.to_owned()))
        .unwrap_or_else(|_| Response::new(Body::Text(PAGE.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_each_inline_block_by_its_hash() {
        let html = "<style>a{}</style><script type=\"module\">x()</script><script>y()</script>";
        let policy = content_security_policy(html);
        let hash = |text: &str| format!("'sha256-{}'", base64_encode(&Sha256::digest(text)));
        assert!(policy.contains(&format!("script-src {} {};", hash("x()"), hash("y()"))));
        assert!(policy.contains(&format!("style-src {};", hash("a{}"))));
        assert!(policy.starts_with("default-src 'none';"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // No external script, style, font or image; the favicon is inline.
        for needle in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
        ] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
        assert!(PAGE.contains("rel=\"icon\" href=\"data:"));
        assert_eq!(inline_hashes(PAGE, "script").len(), 1);
    }
}
