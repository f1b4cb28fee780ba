//! Leases: one conditional write each way, so one holder at a time and a late release never
//! frees a successor's lease.

use super::DynamoStore;
use super::errors::{is_condition_failure, unavailable};
use super::keys::{LeaseItem, key, lease_pk, n, s, to_item};
use crate::domain::ids::TenantId;
use crate::domain::time::Millis;
use crate::store::{Lease, StoreError};

impl DynamoStore {
    pub(super) async fn put_lease(
        &self,
        tenant: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let until = now.saturating_add_ms(ttl_ms);
        let item = LeaseItem {
            pk: lease_pk(tenant),
            sk: name.to_owned(),
            holder: holder.to_owned(),
            until: until.0,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(to_item(&item)?))
            .condition_expression("attribute_not_exists(pk) OR #until < :now OR holder = :holder")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(now.0))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Some(Lease {
                tenant: tenant.clone(),
                name: name.to_owned(),
                holder: holder.to_owned(),
                until,
            })),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn delete_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.config.table)
            .set_key(Some(key(lease_pk(&lease.tenant), lease.name.clone())))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(lease.holder.as_str()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}
