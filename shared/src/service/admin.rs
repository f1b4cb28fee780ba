//! What an admin changes at run time: the tenant's configuration (experiments, playbook) and
//! which model version serves. Every change publishes the next version beside the current one
//! by compare-and-set, so two admins racing never lose each other's change: the loser either
//! reads again and applies its edit on top (no `If-Match`), or is told its version is stale.

use super::{MAX_ATTEMPTS, ServiceError, back_off, builtin_config};
use crate::domain::config::TenantConfig;
use crate::domain::experiments::Invalid;
use crate::domain::ids::TenantId;
use crate::domain::learning::ModelVersion;
use crate::domain::time::Millis;
use crate::store::{Store, Write};

/// Why an admin change was not made. Nothing was written in any case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdminError {
    /// The caller's `If-Match` names another version than the current one.
    #[error("the current version is {current}; the change was made against another")]
    Stale { current: u64 },
    #[error(transparent)]
    Invalid(Invalid),
    #[error("no experiment named {0}")]
    ExperimentNotFound(String),
    #[error("no model version {0}")]
    ModelNotFound(u64),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        AdminError::Service(ServiceError::Store(e))
    }
}

/// What an admin write did: the version now current, and whether this call published it (an
/// edit that changes nothing publishes nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Changed<T> {
    pub current: T,
    pub published: bool,
}

/// The tenant's current configuration, read from the store (version 0, the built-in one,
/// before its first change).
pub async fn current_config<S: Store>(
    store: &S,
    tenant: &TenantId,
) -> Result<TenantConfig, AdminError> {
    Ok(match store.current_config(tenant).await? {
        Some(config) => config,
        None => (*builtin_config()).clone(),
    })
}

/// Applies `edit` to the current configuration and publishes the result as the next version.
/// With `expected`, the change is made only against that version ([`AdminError::Stale`]
/// otherwise); without, a change lost to a racing admin is applied again on top of theirs.
pub async fn change_config<S, E>(
    store: &S,
    tenant: &TenantId,
    expected: Option<u64>,
    at: Millis,
    edit: E,
) -> Result<Changed<TenantConfig>, AdminError>
where
    S: Store,
    E: Fn(&mut TenantConfig) -> Result<(), AdminError>,
{
    for attempt in 0..MAX_ATTEMPTS {
        let current = current_config(store, tenant).await?;
        let mut edited = current.clone();
        let applied = edit(&mut edited);
        // What the request names must exist before its precondition counts (RFC 9110, 13.2.1):
        // an unknown experiment is a 404 whatever the If-Match.
        if let Err(AdminError::ExperimentNotFound(name)) = applied {
            return Err(AdminError::ExperimentNotFound(name));
        }
        if let Some(expected) = expected
            && expected != current.version
        {
            return Err(AdminError::Stale {
                current: current.version,
            });
        }
        applied?;
        let next = current
            .followed_by(at, edited)
            .map_err(AdminError::Invalid)?;
        if next.changes.is_empty() {
            return Ok(Changed {
                current,
                published: false,
            });
        }
        match store.publish_config(tenant, &next).await? {
            Write::Done => {
                return Ok(Changed {
                    current: next,
                    published: true,
                });
            }
            Write::Lost => back_off(attempt).await,
        }
    }
    Err(ServiceError::Contention(MAX_ATTEMPTS).into())
}

/// Publishes a copy of version `source`'s posteriors, calibration and detector layer as the
/// next version: a rollback is one call, and the history stays append-only. The learning state
/// (watermarks, tallies) and the last run's report carry on from the current version, so the
/// next feedback run learns the new outcomes on top of the activated model.
pub async fn activate_model<S: Store>(
    store: &S,
    tenant: &TenantId,
    source: u64,
    expected: Option<u64>,
    at: Millis,
) -> Result<ModelVersion, AdminError> {
    let Some(activated) = store.model_version(tenant, source).await? else {
        return Err(AdminError::ModelNotFound(source));
    };
    for attempt in 0..MAX_ATTEMPTS {
        // A version exists, so a current one does.
        let current = store
            .current_model(tenant)
            .await?
            .ok_or(AdminError::ModelNotFound(source))?;
        if let Some(expected) = expected
            && expected != current.version
        {
            return Err(AdminError::Stale {
                current: current.version,
            });
        }
        let next = ModelVersion {
            version: current.version + 1,
            published_at: at,
            model: activated.model.clone(),
            activated_from: Some(source),
            ..current
        };
        match store.publish_model(tenant, &next).await? {
            Write::Done => return Ok(next),
            Write::Lost => back_off(attempt).await,
        }
    }
    Err(ServiceError::Contention(MAX_ATTEMPTS).into())
}
