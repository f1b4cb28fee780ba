//! The admin routes' edge: which route a request asks for, whether it carries the admin right,
//! and the version its `If-Match` names. Everything here is checked before the store is read.
//!
//! The admin right: deployed, a scope of the caller's JWT (`ADMIN_SCOPE`, default
//! `salesloop/admin`; API Gateway's authorizer checks it too); locally (`SALESLOOP_LOCAL=1`),
//! the header `x-salesloop-role: admin`, as `x-tenant-id` stands for the tenant claim.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::domain::ids::check;
use crate::edge::error::ApiError;
use crate::edge::http::parse_version;

/// The scope an admin's token carries unless `ADMIN_SCOPE` names another.
pub const DEFAULT_ADMIN_SCOPE: &str = "salesloop/admin";

/// The admin routes, as the OpenAPI document and the template name them.
pub const ADMIN_ROUTES: [&str; 6] = [
    "/experiments",
    "/experiments/{name}",
    "/experiments/{name}/stop",
    "/experiments/{name}/ship",
    "/playbook",
    "/models/{version}/activate",
];

/// What an admin request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /experiments`
    Experiments,
    /// `PUT /experiments/{name}`
    PutExperiment(String),
    /// `POST /experiments/{name}/stop`
    StopExperiment(String),
    /// `POST /experiments/{name}/ship`
    ShipExperiment(String),
    /// `GET /playbook`
    Playbook,
    /// `PUT /playbook`
    PutPlaybook,
    /// `POST /models/{version}/activate`
    ActivateModel(u64),
}

/// Where the admin right comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSource {
    /// The JWT scope that grants it.
    pub scope: String,
    /// Local runs only: accept `x-salesloop-role: admin`.
    pub local: bool,
}

/// Finds an admin route at the end of the path (a stage may come before it), then checks the
/// method, then the path parameter.
pub fn admin_route(request: &Request) -> Result<AdminRoute, ApiError> {
    use lambda_http::http::Method;
    let path = request.raw_http_path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method();
    let allow = |allowed: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed(allowed))
        }
    };
    match segments.as_slice() {
        [.., "models", version, "activate"] => {
            allow("POST", method == Method::POST)?;
            parse_version(version).map(AdminRoute::ActivateModel)
        }
        [.., "experiments", name, action @ ("stop" | "ship")] => {
            allow("POST", method == Method::POST)?;
            let name = experiment_name(name)?;
            Ok(if *action == "stop" {
                AdminRoute::StopExperiment(name)
            } else {
                AdminRoute::ShipExperiment(name)
            })
        }
        [.., "experiments"] => {
            allow("GET", method == Method::GET)?;
            Ok(AdminRoute::Experiments)
        }
        [.., "experiments", name] => {
            allow("PUT", method == Method::PUT)?;
            experiment_name(name).map(AdminRoute::PutExperiment)
        }
        [.., "playbook"] => match *method {
            Method::GET => Ok(AdminRoute::Playbook),
            Method::PUT => Ok(AdminRoute::PutPlaybook),
            _ => Err(ApiError::MethodNotAllowed("GET, PUT")),
        },
        _ => Err(ApiError::NotFound),
    }
}

fn experiment_name(raw: &str) -> Result<String, ApiError> {
    check("experiment name", raw).map_err(|e| ApiError::InvalidConfig {
        field: "name".into(),
        reason: e.to_string(),
    })?;
    Ok(raw.to_owned())
}

/// Refuses a request without the admin right with 403 `forbidden`.
pub fn require_admin(request: &Request, source: &AdminSource) -> Result<(), ApiError> {
    if has_scope(request, &source.scope) {
        return Ok(());
    }
    if source.local {
        let mut roles = request.headers().get_all("x-salesloop-role").iter();
        if let (Some(role), None) = (roles.next(), roles.next())
            && role.as_bytes() == b"admin"
        {
            return Ok(());
        }
    }
    Err(ApiError::Forbidden)
}

/// Whether the authorizer passed `scope` among the token's scopes (HTTP API JWT authorizers
/// list them; the `scope` or `scp` claim holds them space-separated otherwise).
fn has_scope(request: &Request, scope: &str) -> bool {
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
        return false;
    };
    let Some(jwt) = context
        .authorizer
        .as_ref()
        .and_then(|authorizer| authorizer.jwt.as_ref())
    else {
        return false;
    };
    let listed = jwt
        .scopes
        .as_ref()
        .is_some_and(|scopes| scopes.iter().any(|s| s == scope));
    let claimed = ["scope", "scp"].iter().any(|claim| {
        jwt.claims
            .get(*claim)
            .is_some_and(|value| value.split_whitespace().any(|s| s == scope))
    });
    listed || claimed
}

/// The version a write is made against, from `If-Match`: `None` without the header (or with
/// `*`: any current version); a strong entity tag `"N"` names version N, written as [`etag`]
/// writes it. A tag that can be no version's (weak, malformed, a list, `"07"`: strong tags
/// compare character by character) matches none, so the write answers 412 with the current
/// version, as RFC 9110 asks of a failed `If-Match`.
pub fn if_match(request: &Request) -> Option<u64> {
    let mut values = request.headers().get_all("if-match").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(u64::MAX);
    }
    let Ok(text) = value.to_str() else {
        return Some(u64::MAX);
    };
    let text = text.trim();
    if text == "*" {
        return None;
    }
    Some(
        text.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|t| {
                !t.is_empty()
                    && t.len() <= 19
                    && t.bytes().all(|b| b.is_ascii_digit())
                    && (*t == "0" || !t.starts_with('0'))
            })
            .and_then(|t| t.parse().ok())
            .unwrap_or(u64::MAX),
    )
}

/// The `ETag` of a version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::Method;
    use lambda_http::{Body, RequestExt};

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = lambda_http::http::Request::builder()
            .method(method)
            .uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::Empty).unwrap().with_raw_http_path(path)
    }

    #[test]
    fn routes_methods_and_names_are_checked_in_that_order() {
        let route = |method, path| admin_route(&request(method, path, &[]));
        assert_eq!(
            route(Method::GET, "/prod/experiments"),
            Ok(AdminRoute::Experiments)
        );
        assert_eq!(
            route(Method::PUT, "/experiments/reply_tone"),
            Ok(AdminRoute::PutExperiment("reply_tone".into()))
        );
        assert_eq!(
            route(Method::POST, "/experiments/reply_tone/ship"),
            Ok(AdminRoute::ShipExperiment("reply_tone".into()))
        );
        assert_eq!(
            route(Method::POST, "/models/3/activate"),
            Ok(AdminRoute::ActivateModel(3))
        );
        assert_eq!(route(Method::PUT, "/playbook"), Ok(AdminRoute::PutPlaybook));
        assert_eq!(
            route(Method::DELETE, "/playbook"),
            Err(ApiError::MethodNotAllowed("GET, PUT"))
        );
        assert_eq!(
            route(Method::GET, "/experiments/x/stop"),
            Err(ApiError::MethodNotAllowed("POST"))
        );
        assert!(matches!(
            route(Method::PUT, "/experiments/a%23b"),
            Err(ApiError::InvalidConfig { .. })
        ));
        assert!(matches!(
            route(Method::POST, "/models/0/activate"),
            Err(ApiError::InvalidVersion(_))
        ));
        assert_eq!(route(Method::GET, "/admin"), Err(ApiError::NotFound));
    }

    #[test]
    fn the_admin_header_counts_only_in_local_runs() {
        let local = AdminSource {
            scope: DEFAULT_ADMIN_SCOPE.into(),
            local: true,
        };
        let deployed = AdminSource {
            local: false,
            ..local.clone()
        };
        let admin = request(
            Method::GET,
            "/experiments",
            &[("x-salesloop-role", "admin")],
        );
        assert_eq!(require_admin(&admin, &local), Ok(()));
        assert_eq!(require_admin(&admin, &deployed), Err(ApiError::Forbidden));
        let viewer = request(
            Method::GET,
            "/experiments",
            &[("x-salesloop-role", "viewer")],
        );
        assert_eq!(require_admin(&viewer, &local), Err(ApiError::Forbidden));
        let twice = request(
            Method::GET,
            "/experiments",
            &[("x-salesloop-role", "admin"), ("x-salesloop-role", "admin")],
        );
        assert_eq!(require_admin(&twice, &local), Err(ApiError::Forbidden));
    }

    #[test]
    fn if_match_names_one_version_or_none() {
        let with =
            |value: &str| if_match(&request(Method::PUT, "/playbook", &[("if-match", value)]));
        assert_eq!(if_match(&request(Method::PUT, "/playbook", &[])), None);
        assert_eq!(with("\"7\""), Some(7));
        assert_eq!(with("*"), None);
        assert_eq!(with("\"0\""), Some(0));
        for never in [
            "7",
            "W/\"7\"",
            "\"7\", \"8\"",
            "\"\"",
            "\"-1\"",
            "\"99999999999999999999\"",
            "\"07\"",
            "\"00\"",
        ] {
            assert_eq!(with(never), Some(u64::MAX), "{never}");
        }
    }
}
