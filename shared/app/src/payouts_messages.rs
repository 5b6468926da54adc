//! The product's messages about debtor accounts (docs/payments-out.md §8), answered through
//! Payments Out's provider messaging API: a `debtoraccountputs` is decided against the consent
//! bound to the subscription and kept; a list query is answered from what is kept, one message
//! per account; a delete keeps a tombstone. Each answer repeats the product's `correlationId`,
//! and a retried message gives the same answer (ids are derived, not drawn).

use std::sync::Arc;

use connector_domain::payouts::authorise::ConsentAccount;
use connector_domain::payouts::checks::RuleSet;
use connector_domain::payouts::creditors::{self, Creditor};
use connector_domain::payouts::parties::{
    DebtorAccount, DebtorContext, DebtorDecision, PartyStatus, decide_debtor, list_answers,
    put_answer, queried_ids,
};
use connector_domain::ports::{
    BankLogin, BindingStore, Clock, LoginError, PartyStore, PayoutsApiPort, SealError, Sealer,
};
use serde_json::{Value, json};
use sha2::Digest;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::payouts_onboarding::failed;

/// A product's message, as the intake queued it.
#[derive(Debug, Clone)]
pub struct ProductMessage<'a> {
    pub kind: &'a str,
    pub subscription_id: Uuid,
    pub correlation_id: Option<&'a str>,
    pub data: &'a Value,
    pub application: Option<&'a str>,
}

/// What was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    Put(PartyStatus),
    Listed(usize),
    Deleted { found: bool },
}

pub struct Messages {
    pub api: Arc<dyn PayoutsApiPort>,
    pub bindings: Arc<dyn BindingStore>,
    pub bank: Arc<dyn BankLogin>,
    pub parties: Arc<dyn PartyStore>,
    pub clock: Arc<dyn Clock>,
    /// `SUPPORTED_CURRENCIES` (`USD`).
    pub supported_currencies: Vec<String>,
    /// Seals creditors' bank details (KMS).
    pub sealer: Arc<dyn Sealer>,
}

/// The message kinds handled here.
pub const MESSAGE_KINDS: [&str; 6] = [
    "debtoraccountputs",
    "debtoraccountlistqueries",
    "debtoraccountdeletes",
    "creditorputs",
    "creditorlistqueries",
    "creditordeletes",
];

/// A stable id for a debtor account or creditor of a subscription: the same put gives the
/// same id.
fn derived_id(prefix: &str, subscription_id: Uuid, key: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{subscription_id}|{key}").as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

fn sealing(e: SealError) -> MessageError {
    if let SealError::Configuration(reason) = &e {
        tracing::error!(%reason, "configuration error: the creditor key cannot be used");
    }
    MessageError::Retry(e.to_string())
}

impl Messages {
    pub async fn handle(&self, m: ProductMessage<'_>) -> Result<Answered, MessageError> {
        match m.kind {
            "debtoraccountputs" => self.put_debtor(&m).await,
            "debtoraccountlistqueries" => self.list_debtors(&m).await,
            "debtoraccountdeletes" => self.delete_debtor(&m).await,
            "creditorputs" => self.put_creditor(&m).await,
            "creditorlistqueries" => self.list_creditors(&m).await,
            "creditordeletes" => self.delete_creditor(&m).await,
            other => Err(MessageError::Poison(format!(
                "NotYetHandled: {other}; redrive once the worker handles it"
            ))),
        }
    }

    /// The accounts of the consent bound to the subscription, while it is active (`None`: no
    /// binding, or the consent is not active).
    async fn consent_accounts(
        &self,
        subscription_id: Uuid,
    ) -> Result<Option<Vec<ConsentAccount>>, MessageError> {
        let Some(binding) = self.bindings.binding(subscription_id).await? else {
            return Ok(None);
        };
        match self.bank.consent(&binding.consent_id).await {
            Ok(c) if c.status == "active" && c.expires_at > self.clock.now() => {
                Ok(Some(c.accounts))
            }
            Ok(_) | Err(LoginError::Consent(_)) => Ok(None),
            Err(e @ LoginError::Unavailable(_)) => Err(MessageError::Retry(e.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "configuration error: the bank refused the connector");
                Err(MessageError::Retry(e.to_string()))
            }
        }
    }

    /// The provider's `DebtorAccountPut` rules, read now.
    async fn rules(&self) -> Result<RuleSet, MessageError> {
        let configuration = self
            .api
            .provider_configuration()
            .await
            .map_err(|e| failed("GET provider", e))?;
        RuleSet::from_provider_config(&configuration).map_err(|e| {
            tracing::error!(error = %e, "configuration error: the provider configuration has an unusable rule");
            MessageError::Retry(e.to_string())
        })
    }

    async fn answer(
        &self,
        op: &str,
        m: &ProductMessage<'_>,
        data: &Value,
    ) -> Result<(), MessageError> {
        self.api
            .post_message(op, m.subscription_id, m.correlation_id, data, m.application)
            .await
            .map_err(|e| failed(op, e))
    }

    async fn put_debtor(&self, m: &ProductMessage<'_>) -> Result<Answered, MessageError> {
        let accounts = self.consent_accounts(m.subscription_id).await?;
        let rules = self.rules().await?;
        let decision = decide_debtor(
            m.data,
            &DebtorContext {
                consent_accounts: accounts.as_deref(),
                supported_currencies: &self.supported_currencies,
                rules: &rules,
            },
        );
        let debtor = m.data["debtor"].clone();
        let (status, reason, bank_account_id, currency, key) = match decision {
            DebtorDecision::Active {
                bank_account_id,
                currency,
            } => (
                PartyStatus::Active,
                None,
                Some(bank_account_id.clone()),
                Some(currency),
                bank_account_id,
            ),
            DebtorDecision::Rejected(reason) => (
                PartyStatus::Rejected,
                Some(reason),
                None,
                None,
                debtor["bankAccount"].to_string(),
            ),
        };
        let account = DebtorAccount {
            subscription_id: m.subscription_id,
            debtor_account_id: derived_id("dac", m.subscription_id, &key),
            status,
            status_reason: reason,
            bank_account_id,
            currency,
            debtor,
            legal_entity: m.data.get("legalEntity").cloned(),
            updated_at: self.clock.now(),
        };
        self.parties.put_debtor(&account).await?;
        self.answer("debtoraccountputs", m, &put_answer(&account))
            .await?;
        tracing::info!(subscription_id = %m.subscription_id, debtor_account_id = %account.debtor_account_id, ?status, reason = ?account.status_reason, "debtor account answered");
        Ok(Answered::Put(status))
    }

    async fn list_debtors(&self, m: &ProductMessage<'_>) -> Result<Answered, MessageError> {
        let all = self.parties.debtors(m.subscription_id).await?;
        let chosen: Vec<DebtorAccount> = match queried_ids(m.data, "debtorAccountIds") {
            Some(ids) => all
                .into_iter()
                .filter(|a| ids.contains(&a.debtor_account_id))
                .collect(),
            None => all
                .into_iter()
                .filter(|a| a.status != PartyStatus::Deleted)
                .collect(),
        };
        for data in list_answers(&chosen, m.correlation_id) {
            self.answer("debtoraccountlistqueryresponses", m, &data)
                .await?;
        }
        Ok(Answered::Listed(chosen.len()))
    }

    async fn delete_debtor(&self, m: &ProductMessage<'_>) -> Result<Answered, MessageError> {
        let Some(id) = m.data["debtorAccountId"].as_str() else {
            return Err(MessageError::Poison(
                "debtoraccountdeletes without data.debtorAccountId".into(),
            ));
        };
        let found = self.parties.debtor(m.subscription_id, id).await?;
        let answer = match found {
            Some(mut account) => {
                account.status = PartyStatus::Deleted;
                account.status_reason = None;
                account.updated_at = self.clock.now();
                self.parties.put_debtor(&account).await?;
                json!({ "debtorAccountId": id, "status": "Deleted" })
            }
            None => {
                json!({ "debtorAccountId": id, "status": "Rejected", "statusReason": "NotFound" })
            }
        };
        self.answer("debtoraccountdeletes", m, &answer).await?;
        Ok(Answered::Deleted {
            found: answer["status"] == "Deleted",
        })
    }

    async fn put_creditor(&self, m: &ProductMessage<'_>) -> Result<Answered, MessageError> {
        let authorised = self.consent_accounts(m.subscription_id).await?.is_some();
        let rules = self.rules().await?;
        let (status, reason) = match creditors::decide_creditor(m.data, authorised, &rules) {
            Ok(()) => (PartyStatus::Active, None),
            Err(reason) => (PartyStatus::Rejected, Some(reason)),
        };
        let (clear, bank_account) = creditors::split_bank_account(&m.data["creditor"]);
        let key = clear["externalId"]
            .as_str()
            .map_or_else(|| m.data["creditor"].to_string(), str::to_string);
        let sealed = match &bank_account {
            Some(account) => Some(
                self.sealer
                    .seal(account.to_string().as_bytes())
                    .await
                    .map_err(sealing)?,
            ),
            None => None,
        };
        let creditor = Creditor {
            subscription_id: m.subscription_id,
            creditor_id: derived_id("cre", m.subscription_id, &key),
            status,
            status_reason: reason,
            creditor: clear,
            sealed_bank_account: sealed,
            updated_at: self.clock.now(),
        };
        self.parties.put_creditor(&creditor).await?;
        let answer = creditors::put_answer(&creditor, bank_account);
        self.answer("creditorputs", m, &answer).await?;
        tracing::info!(subscription_id = %m.subscription_id, creditor_id = %creditor.creditor_id, ?status, reason = ?creditor.status_reason, "creditor answered");
        Ok(Answered::Put(status))
    }

    /// The creditor's bank account, opened.
    async fn bank_account(&self, creditor: &Creditor) -> Result<Option<Value>, MessageError> {
        let Some(sealed) = &creditor.sealed_bank_account else {
            return Ok(None);
        };
        let plain = self.sealer.open(sealed).await.map_err(sealing)?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| {
            MessageError::Poison(format!("a sealed bank account that is no JSON: {e}"))
        })
    }

    async fn list_creditors(&self, m: &ProductMessage<'_>) -> Result<Answered, MessageError> {
        let all = self.parties.creditors(m.subscription_id).await?;
        let chosen: Vec<Creditor> = match queried_ids(m.data, "creditorIds") {
            Some(ids) => all
                .into_iter()
                .filter(|c| ids.contains(&c.creditor_id))
                .collect(),
            None => all
                .into_iter()
                .filter(|c| c.status != PartyStatus::Deleted)
                .collect(),
        };
        let count = chosen.len();
        let mut opened = Vec::with_capacity(count);
        for c in chosen {
            let account = self.bank_account(&c).await?;
            opened.push((c, account));
        }
        for data in creditors::list_answers(opened, m.correlation_id) {
            self.answer("creditorlistqueryresponses", m, &data).await?;
        }
        Ok(Answered::Listed(count))
    }

    async fn delete_creditor(&self, m: &ProductMessage<'_>) -> Result<Answered, MessageError> {
        let Some(id) = m.data["creditorId"].as_str() else {
            return Err(MessageError::Poison(
                "creditordeletes without data.creditorId".into(),
            ));
        };
        let answer = match self.parties.creditor(m.subscription_id, id).await? {
            Some(mut creditor) => {
                // A deleted creditor's bank details are not kept.
                creditor.status = PartyStatus::Deleted;
                creditor.status_reason = None;
                creditor.sealed_bank_account = None;
                creditor.updated_at = self.clock.now();
                self.parties.put_creditor(&creditor).await?;
                json!({ "creditorId": id, "status": "Deleted" })
            }
            None => json!({ "creditorId": id, "status": "Rejected", "statusReason": "NotFound" }),
        };
        self.answer("creditordeletes", m, &answer).await?;
        Ok(Answered::Deleted {
            found: answer["status"] == "Deleted",
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use connector_domain::payouts::authorise::Binding;

    use super::*;
    use crate::fakes::{FakeConsents, FakePayouts, FakeSealer, ManualClock, MemoryStore};

    async fn setup(consent: &str, bound: bool) -> (Messages, Arc<FakePayouts>, Uuid) {
        let store = Arc::new(MemoryStore::default());
        let sub = Uuid::new_v4();
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        if bound {
            store
                .bind(&Binding {
                    subscription_id: sub,
                    customer_id: "cust-1".into(),
                    consent_id: "cns-1".into(),
                    bound_at: now,
                })
                .await
                .unwrap();
        }
        let payouts = Arc::new(FakePayouts::default());
        *payouts.configuration.lock().unwrap() = json!({});
        let messages = Messages {
            api: payouts.clone(),
            bindings: store.clone(),
            bank: Arc::new(FakeConsents::new(consent)),
            parties: store,
            clock: Arc::new(ManualClock::new(now)),
            supported_currencies: vec!["USD".into()],
            sealer: Arc::new(FakeSealer),
        };
        (messages, payouts, sub)
    }

    fn message<'a>(kind: &'a str, sub: Uuid, data: &'a Value) -> ProductMessage<'a> {
        ProductMessage {
            kind,
            subscription_id: sub,
            correlation_id: Some("corr-1"),
            data,
            application: None,
        }
    }

    #[tokio::test]
    async fn a_consented_account_becomes_a_debtor_account_listed_and_deleted_with_the_same_id() {
        let (m, payouts, sub) = setup("active", true).await;
        let put =
            json!({"debtor": {"externalId": "D-1", "bankAccount": {"accountNumber": "40001"}}});
        assert_eq!(
            m.handle(message("debtoraccountputs", sub, &put))
                .await
                .unwrap(),
            Answered::Put(PartyStatus::Active)
        );
        // A retried put answers the same id.
        m.handle(message("debtoraccountputs", sub, &put))
            .await
            .unwrap();
        let sent = payouts.messages.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        let (op, to, corr, data) = &sent[0];
        assert_eq!(
            (op.as_str(), *to, corr.as_deref()),
            ("debtoraccountputs", sub, Some("corr-1"))
        );
        let id = data["debtor"]["debtorAccountId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(id.starts_with("dac_"));
        assert_eq!(sent[1].3, *data);
        assert_eq!(data["debtor"]["status"], "Active");
        assert_eq!(data["debtor"]["externalId"], "D-1");

        let list = json!({});
        assert_eq!(
            m.handle(message("debtoraccountlistqueries", sub, &list))
                .await
                .unwrap(),
            Answered::Listed(1)
        );
        let del = json!({"debtorAccountId": id});
        assert_eq!(
            m.handle(message("debtoraccountdeletes", sub, &del))
                .await
                .unwrap(),
            Answered::Deleted { found: true }
        );
        assert_eq!(
            m.handle(message("debtoraccountlistqueries", sub, &list))
                .await
                .unwrap(),
            Answered::Listed(0),
            "a deleted account is listed only when asked for by id"
        );
        let by_id = json!({"debtorAccountIds": [id]});
        assert_eq!(
            m.handle(message("debtoraccountlistqueries", sub, &by_id))
                .await
                .unwrap(),
            Answered::Listed(1)
        );
        let sent = payouts.messages.lock().unwrap().clone();
        let last = &sent.last().unwrap().3;
        assert_eq!(last["debtor"]["status"], "Deleted");
        assert_eq!(last["query"]["total"], 1);
        let unknown = json!({"debtorAccountId": "dac_nope"});
        assert_eq!(
            m.handle(message("debtoraccountdeletes", sub, &unknown))
                .await
                .unwrap(),
            Answered::Deleted { found: false }
        );
    }

    #[tokio::test]
    async fn without_an_active_consent_or_with_an_unknown_account_the_put_is_rejected() {
        for (consent, bound, number, reason) in [
            ("active", false, "40001", "SubscriptionNotAuthorised"),
            ("pending_review", true, "40001", "SubscriptionNotAuthorised"),
            ("active", true, "49999", "AccountNotInConsent"),
        ] {
            let (m, payouts, sub) = setup(consent, bound).await;
            let put = json!({"debtor": {"bankAccount": {"accountNumber": number}}});
            assert_eq!(
                m.handle(message("debtoraccountputs", sub, &put))
                    .await
                    .unwrap(),
                Answered::Put(PartyStatus::Rejected)
            );
            let data = payouts.messages.lock().unwrap()[0].3.clone();
            assert_eq!(
                data["debtor"]["statusReason"], reason,
                "{consent} {bound} {number}"
            );
            assert!(data["debtor"]["debtorAccountId"].is_string());
        }
    }

    #[tokio::test]
    async fn a_creditor_is_kept_with_its_bank_account_sealed_and_answered_whole() {
        let (m, payouts, sub) = setup("active", true).await;
        let creditor = json!({"creditor": {"externalId": "V-1", "name": "Northwind",
            "creditorType": "Organisation",
            "bankAccount": {"routingNumber": "021000021", "accountNumber": "000123456789"}}});
        assert_eq!(
            m.handle(message("creditorputs", sub, &creditor))
                .await
                .unwrap(),
            Answered::Put(PartyStatus::Active)
        );
        let sent = payouts.messages.lock().unwrap().clone();
        let answer = &sent[0].3["creditor"];
        assert_eq!(answer["status"], "Active");
        assert_eq!(answer["bankAccount"]["accountNumber"], "000123456789");
        let id = answer["creditorId"].as_str().unwrap().to_string();
        let kept = m.parties.creditor(sub, &id).await.unwrap().unwrap();
        let stored = serde_json::to_string(&kept).unwrap();
        assert!(!stored.contains("000123456789"), "sealed at rest: {stored}");

        m.handle(message("creditorlistqueries", sub, &json!({})))
            .await
            .unwrap();
        let listed = payouts.messages.lock().unwrap().last().cloned().unwrap();
        assert_eq!(listed.0, "creditorlistqueryresponses");
        assert_eq!(
            listed.3["creditor"]["bankAccount"]["accountNumber"],
            "000123456789"
        );

        let del = json!({"creditorId": id});
        assert_eq!(
            m.handle(message("creditordeletes", sub, &del))
                .await
                .unwrap(),
            Answered::Deleted { found: true }
        );
        let gone = m.parties.creditor(sub, &id).await.unwrap().unwrap();
        assert_eq!(gone.status, PartyStatus::Deleted);
        assert!(
            gone.sealed_bank_account.is_none(),
            "a deleted creditor's details are dropped"
        );

        let bad = json!({"creditor": {"externalId": "V-2", "name": "X",
            "bankAccount": {"routingNumber": "021000022", "accountNumber": "1234"}}});
        assert_eq!(
            m.handle(message("creditorputs", sub, &bad)).await.unwrap(),
            Answered::Put(PartyStatus::Rejected)
        );
        let rejected = payouts.messages.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            rejected.3["creditor"]["statusReason"],
            "ValidationFailed: routingNumber"
        );
    }
}
