//! Payments Out's records in the table: each subscription's authorisation link, under the
//! subscription (`PO#SUB#{subscriptionId}`, written first and conditionally, so that one link is
//! ever minted per subscription) and under the link (`PO#LINK#{linkId}`, for the authorisation
//! page to find its subscription).

use connector_domain::payouts::onboarding::AuthLink;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::table::{StoreError, Table};

const SK: &str = "LINK";

fn by_subscription(id: Uuid) -> String {
    format!("PO#SUB#{id}")
}

fn by_link(link_id: &str) -> String {
    format!("PO#LINK#{link_id}")
}

#[derive(Serialize, Deserialize)]
struct LinkItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    link: AuthLink,
}

impl Table {
    pub async fn link_for(&self, subscription_id: Uuid) -> Result<Option<AuthLink>, StoreError> {
        Ok(self
            .get_as::<LinkItem>(by_subscription(subscription_id), SK)
            .await?
            .map(|i| i.link))
    }

    pub async fn link(&self, link_id: &str) -> Result<Option<AuthLink>, StoreError> {
        Ok(self
            .get_as::<LinkItem>(by_link(link_id), SK)
            .await?
            .map(|i| i.link))
    }

    /// Records the link under the subscription unless one is there, then under the link id
    /// (a crash between the two leaves the second for the retry, which finds the first).
    pub async fn record_link(&self, link: &AuthLink) -> Result<AuthLink, StoreError> {
        let new = LinkItem {
            pk: by_subscription(link.subscription_id),
            sk: SK.into(),
            link: link.clone(),
        };
        let recorded = if self.put_new(&new).await? {
            link.clone()
        } else {
            self.link_for(link.subscription_id)
                .await?
                .ok_or_else(|| StoreError::corrupt("a link vanished after it was refused"))?
        };
        self.put_as(&LinkItem {
            pk: by_link(&recorded.link_id),
            sk: SK.into(),
            link: recorded.clone(),
        })
        .await?;
        Ok(recorded)
    }
}
