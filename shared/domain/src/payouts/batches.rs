//! Batches of payments (docs/payments-out.md §9): what a batch decides once checked, each
//! payment's record at the connector (what Sage should show, what went to the bank), the bank's
//! submission body, and what a bank event changes.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::checks::{Amount, PaymentContext, PaymentInput, RuleSet, check_batch, check_payment};
use super::creditors::Creditor;
use super::parties::DebtorAccount;
use super::status::{BankOutcome, BatchStatus, PaymentStatus, SubscriptionStatus};

/// A payment as Payments Out holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub status: PaymentStatus,
    pub amount: Amount,
    pub currency: String,
    pub local_instrument: Option<String>,
    pub requested_execution_date: Option<String>,
    /// The payment as sent (rules, the `"` rule, the bank's body).
    pub document: Value,
}

/// A batch as Payments Out holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchView {
    pub batch_id: Uuid,
    pub subscription_id: Option<Uuid>,
    pub status: BatchStatus,
    pub payments: Vec<PaymentView>,
}

/// The connector's record of a payment: the status it decided (what Sage should show) and what
/// it sent the bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRecord {
    pub payment_id: Uuid,
    pub batch_id: Uuid,
    pub status: PaymentStatus,
    /// Its `extendedStatus`.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// The bank's `PUT /v1/payments/{paymentId}` body, for a payment to submit (the same body
    /// on every retry: the bank answers an identical replay with the same payment).
    #[serde(default)]
    pub submission: Option<Value>,
    #[serde(default)]
    pub submitted: bool,
    /// The last bank event applied (events may come twice or out of order).
    #[serde(default)]
    pub event_seq: u64,
    /// Whether Payments Out has `status`. A status decided at the check is written `true`: the
    /// batch's decision PATCH carries it, and until that is sent [`BatchRecord::decision_patched`]
    /// is `false` (one write for the batch instead of one per payment). Every later change sets
    /// it `false` until a PATCH carries the change.
    #[serde(default)]
    pub patched: bool,
    /// The bank returned it after settling it: the bank's reason (empty if it gave none).
    #[serde(default)]
    pub returned: Option<String>,
    /// Whether the product was told of the return.
    #[serde(default)]
    pub return_told: bool,
    /// Counts the record's writes: each write expects the version it read.
    #[serde(default)]
    pub version: u64,
}

impl PaymentRecord {
    /// Whether Sage still lacks something of it: its status, or the product's note of a return.
    pub fn owes_sage(&self) -> bool {
        !self.patched || self.return_untold()
    }

    /// Returned by the bank after settling, and the product not told yet.
    pub fn return_untold(&self) -> bool {
        self.returned.is_some() && !self.return_told
    }

    /// Where the record stands for its batch's windows, which read only what they need: the
    /// payments Sage lacks something of, and whether any other is still moving. `None`: final
    /// and known to Sage.
    pub fn watch(&self) -> Option<Watch> {
        if self.owes_sage() {
            Some(Watch::Owing)
        } else if !self.status.is_terminal() {
            Some(Watch::Moving)
        } else {
            None
        }
    }
}

/// A payment's place among those its batch's windows look at ([`PaymentRecord::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Sage lacks something of it.
    Owing,
    /// Sage has it, and it is not final.
    Moving,
}

/// The connector's record of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecord {
    pub batch_id: Uuid,
    pub subscription_id: Option<Uuid>,
    /// The product that sent it (the `x-application` of every call about it).
    #[serde(default)]
    pub application: Option<String>,
    /// The status the connector decided for it.
    pub status: BatchStatus,
    #[serde(default)]
    pub reason: Option<String>,
    pub payment_count: usize,
    pub checked_at: DateTime<Utc>,
    /// Whether the decision PATCH (every payment's decided status, in one call) was sent. A
    /// record without it predates the field: its payments were noted one by one.
    #[serde(default = "sent_before_the_field")]
    pub decision_patched: bool,
    /// Whether its payments are stored under their [`PaymentRecord::watch`], so that a window
    /// reads only those it needs. A record without it predates the field: its windows read
    /// every payment.
    #[serde(default)]
    pub watched_payments: bool,
}

fn sent_before_the_field() -> bool {
    true
}

/// What a batch is checked against besides itself.
pub struct BatchContext<'a> {
    /// The subscription's status for batches: `Authorised` when a consent is bound and active.
    pub subscription: Option<SubscriptionStatus>,
    pub consent_id: Option<&'a str>,
    pub maximum_payment_count: Option<usize>,
    pub supported_currencies: &'a [String],
    /// The subscription's debtor accounts by id.
    pub debtors: &'a HashMap<String, DebtorAccount>,
    /// The subscription's creditors by id (a payment naming one needs it active).
    pub creditors: &'a HashMap<String, Creditor>,
    pub today: NaiveDate,
    pub rules: &'a RuleSet,
    pub now: DateTime<Utc>,
}

/// A checked batch: its record and one record per payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub batch: BatchRecord,
    pub payments: Vec<PaymentRecord>,
}

/// Checks the batch and each payment (docs/payments-out.md §4): valid payments go
/// `Processing` with their bank body, the others `Rejected` with the check that failed; a
/// failed batch check, or no valid payment, rejects the batch and every payment.
pub fn decide(batch: &BatchView, ctx: &BatchContext) -> Decided {
    let record = |status, reason: Option<String>| BatchRecord {
        batch_id: batch.batch_id,
        subscription_id: batch.subscription_id,
        application: None,
        status,
        reason,
        payment_count: batch.payments.len(),
        checked_at: ctx.now,
        decision_patched: false,
        watched_payments: true,
    };
    let reject_all = |reason: String| Decided {
        batch: record(BatchStatus::Rejected, Some(reason.clone())),
        payments: batch
            .payments
            .iter()
            .map(|p| payment_record(batch.batch_id, p.payment_id, Err(reason.clone())))
            .collect(),
    };
    if let Err(e) = check_batch(
        batch.payments.len(),
        ctx.maximum_payment_count,
        ctx.subscription,
    ) {
        return reject_all(e.to_string());
    }
    let payments: Vec<PaymentRecord> = batch
        .payments
        .iter()
        .map(|p| {
            let outcome =
                check_one(p, ctx).map(|debtor| submission(batch.batch_id, p, debtor, ctx));
            payment_record(batch.batch_id, p.payment_id, outcome)
        })
        .collect();
    if payments.iter().all(|p| p.status == PaymentStatus::Rejected) {
        // Each payment keeps the check it failed; the batch says why it goes no further.
        return Decided {
            batch: record(
                BatchStatus::Rejected,
                Some("ValidationFailed: NoValidPayment".into()),
            ),
            payments,
        };
    }
    Decided {
        batch: record(BatchStatus::Processing, None),
        payments,
    }
}

fn payment_record(
    batch_id: Uuid,
    payment_id: Uuid,
    outcome: Result<Value, String>,
) -> PaymentRecord {
    let (status, reason, submission) = match outcome {
        Ok(body) => (PaymentStatus::Processing, None, Some(body)),
        Err(reason) => (PaymentStatus::Rejected, Some(reason), None),
    };
    PaymentRecord {
        payment_id,
        batch_id,
        status,
        reason,
        completed_at: None,
        submission,
        submitted: false,
        event_seq: 0,
        // Sent by the batch's decision PATCH (`BatchRecord::decision_patched`).
        patched: true,
        returned: None,
        return_told: false,
        version: 0,
    }
}

/// The payment's checks; its debtor account when they pass.
fn check_one<'a>(p: &PaymentView, ctx: &'a BatchContext) -> Result<&'a DebtorAccount, String> {
    let debtor = p.document["debtor"]["debtorAccountId"]
        .as_str()
        .and_then(|id| ctx.debtors.get(id));
    let active_creditor = match p.document["creditor"]["creditorId"].as_str() {
        Some(id) => ctx.creditors.get(id).is_some_and(Creditor::is_active),
        None => true,
    };
    let input = PaymentInput {
        amount: &p.amount,
        currency: &p.currency,
        requested_execution_date: p.requested_execution_date.as_deref(),
        local_instrument: p.local_instrument.as_deref(),
        document: &p.document,
    };
    let context = PaymentContext {
        supported_currencies: ctx.supported_currencies,
        debtor_currency: debtor.and_then(DebtorAccount::pays_in),
        creditor_active: active_creditor,
        today: ctx.today,
        rules: ctx.rules,
    };
    check_payment(&input, &context)?;
    debtor.ok_or_else(|| "ValidationFailed: DebtorAccountNotActive".to_string())
}

/// The bank's `PUT /v1/payments/{paymentId}` body (docs/bank-data-api.md §4.1).
fn submission(
    batch_id: Uuid,
    p: &PaymentView,
    debtor: &DebtorAccount,
    ctx: &BatchContext,
) -> Value {
    let mut amount = p.amount.value.unwrap_or_default();
    amount.rescale(2);
    let creditor = &p.document["creditor"];
    json!({
        "debtorAccountId": debtor.bank_account_id,
        "consentId": ctx.consent_id,
        "amount": amount.to_string(),
        "currency": p.currency,
        "localInstrument": p.local_instrument,
        "requestedExecutionDate": p.requested_execution_date,
        "reference": p.document["remittanceInformation"]["reference"],
        "batchRef": batch_id,
        "creditor": {
            "name": creditor["name"],
            "bankAccount": creditor["bankAccount"],
            "postalAddress": creditor["postalAddress"],
        },
        "remittanceEmail": p.document["debtor"]["remittanceEmail"],
    })
}

/// A payment event from the bank (docs/bank-data-api.md §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankEvent {
    pub event_id: String,
    pub payment_id: Uuid,
    pub status: String,
    pub event_seq: u64,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub reason_message: Option<String>,
}

/// The record after `event`, if the event changes what Sage should show: a newer event of a
/// payment not yet terminal, leading to another status. `now` stands for the completion time of
/// a settlement or return whose event names none.
pub fn apply_event(
    record: &PaymentRecord,
    event: &BankEvent,
    now: DateTime<Utc>,
) -> Option<PaymentRecord> {
    let moved = move_on(record, event, now);
    let now = moved.as_ref().unwrap_or(record);
    // A return is noted once, whatever order its settlement arrives in; the payment stays
    // `Paid` at Sage and the product is told by a message (`return_notice`).
    if BankOutcome::of(&event.status) == BankOutcome::Returned
        && now.status == PaymentStatus::Paid
        && now.returned.is_none()
    {
        let mut next = now.clone();
        next.returned = Some(reason_of(event).unwrap_or_default());
        return Some(next);
    }
    moved
}

/// Whether the event can change a payment the connector decided. `accepted` and `submitted`
/// cannot: a decided payment is `Processing` from its decision to its outcome (or terminal
/// already), and they lead to `Processing`. So the bank's push of one needs no read of the
/// payment's record.
pub fn may_change(event: &BankEvent) -> bool {
    BankOutcome::of(&event.status) != BankOutcome::InProgress
}

/// `reasonCode: reasonMessage`, whichever the bank gave.
fn reason_of(event: &BankEvent) -> Option<String> {
    let parts: Vec<&str> = [
        event.reason_code.as_deref(),
        event.reason_message.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// The status change an event makes, if it is newer and leads somewhere new.
fn move_on(record: &PaymentRecord, event: &BankEvent, now: DateTime<Utc>) -> Option<PaymentRecord> {
    if event.event_seq <= record.event_seq || record.status.is_terminal() {
        return None;
    }
    let outcome = BankOutcome::of(&event.status);
    let status = outcome.status()?;
    if status == record.status || !record.status.can_move_to(status) {
        return None;
    }
    let mut next = record.clone();
    next.event_seq = event.event_seq;
    next.status = status;
    next.patched = false;
    // The bank's event proves it holds the payment, even when the event overtook the
    // submitter's own note of it.
    next.submitted = true;
    match outcome {
        BankOutcome::Settled | BankOutcome::Returned => {
            next.completed_at = Some(event.completed_at.unwrap_or(now));
        }
        BankOutcome::Ended(_) => next.reason = reason_of(event),
        _ => {}
    }
    Some(next)
}

/// The product's `notifications` message for a payment the bank returned after settling it,
/// once Sage has it `Paid` and the product was not told yet (it stays `Paid` at Sage).
pub fn return_notice(record: &PaymentRecord) -> Option<Value> {
    let reason = record.returned.as_deref()?;
    if record.status != PaymentStatus::Paid || !record.patched || record.return_told {
        return None;
    }
    Some(json!({
        "resourceType": "payment",
        "resourceId": record.payment_id,
        "event": "Returned",
        "status": "Paid",
        "message": (!reason.is_empty()).then_some(reason),
    }))
}

/// A payment not yet sent to the bank whose subscription can no longer pay (its consent was
/// revoked or expired): `Cancelled` with `reason`, and never sent. `None` once it was sent.
pub fn cancel_unsent(record: &PaymentRecord, reason: &str) -> Option<PaymentRecord> {
    if record.submitted || record.status != PaymentStatus::Processing {
        return None;
    }
    let mut next = record.clone();
    next.status = PaymentStatus::Cancelled;
    next.reason = Some(reason.into());
    next.patched = false;
    Some(next)
}

/// The bank refused a submission (422): the payment is `Rejected` with the bank's reasons.
pub fn refused_by_bank(record: &PaymentRecord, reasons: &str) -> PaymentRecord {
    let mut next = record.clone();
    next.status = PaymentStatus::Rejected;
    next.reason = Some(format!("BankRejected: {reasons}"));
    next.submitted = true;
    next.patched = false;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payouts::parties::PartyStatus;

    #[test]
    fn a_payment_is_watched_while_sage_lacks_something_of_it_or_it_moves() {
        let record = |status: &str, patched: bool, returned: Option<&str>, told: bool| {
            serde_json::from_value::<PaymentRecord>(json!({
                "paymentId": Uuid::nil(), "batchId": Uuid::nil(), "status": status,
                "patched": patched, "returned": returned, "returnTold": told,
            }))
            .unwrap()
            .watch()
        };
        assert_eq!(record("Processing", false, None, false), Some(Watch::Owing));
        assert_eq!(record("Paid", false, None, false), Some(Watch::Owing));
        assert_eq!(record("Processing", true, None, false), Some(Watch::Moving));
        assert_eq!(record("Paid", true, Some(""), false), Some(Watch::Owing));
        assert_eq!(record("Paid", true, Some(""), true), None);
        assert_eq!(record("Rejected", true, None, false), None);
    }

    #[test]
    fn a_batch_recorded_before_the_payments_watch_says_so() {
        let old: BatchRecord = serde_json::from_value(json!({
            "batchId": Uuid::nil(), "status": "Processing", "paymentCount": 2,
            "checkedAt": "2026-03-01T09:00:00Z",
        }))
        .unwrap();
        assert!(old.decision_patched && !old.watched_payments, "{old:?}");
    }

    fn now() -> DateTime<Utc> {
        "2026-03-01T09:00:00Z".parse().unwrap()
    }

    fn payment(amount: &str, debtor: &str) -> PaymentView {
        PaymentView {
            payment_id: Uuid::new_v4(),
            status: PaymentStatus::Received,
            amount: Amount::from_literal(amount),
            currency: "USD".into(),
            local_instrument: Some("ACH".into()),
            requested_execution_date: Some("2026-03-02".into()),
            document: json!({"debtor": {"debtorAccountId": debtor, "remittanceEmail": "ap@acme.test"},
                "creditor": {"creditorId": null, "name": "Northwind",
                    "bankAccount": {"routingNumber": "021000021", "accountNumber": "000123456789"}},
                "remittanceInformation": {"reference": "BILL-1"}}),
        }
    }

    fn debtors() -> HashMap<String, DebtorAccount> {
        let account = DebtorAccount {
            subscription_id: Uuid::nil(),
            debtor_account_id: "dac_1".into(),
            status: PartyStatus::Active,
            status_reason: None,
            bank_account_id: Some("acc_1".into()),
            currency: Some("USD".into()),
            debtor: json!({}),
            legal_entity: None,
            updated_at: now(),
        };
        HashMap::from([("dac_1".to_string(), account)])
    }

    fn decide_with(
        payments: Vec<PaymentView>,
        subscription: Option<SubscriptionStatus>,
    ) -> Decided {
        let debtors = debtors();
        let usd = ["USD".to_string()];
        let rules = RuleSet::new(vec![]);
        decide(
            &BatchView {
                batch_id: Uuid::nil(),
                subscription_id: Some(Uuid::nil()),
                status: BatchStatus::Received,
                payments,
            },
            &BatchContext {
                subscription,
                consent_id: Some("cns-1"),
                maximum_payment_count: Some(1000),
                supported_currencies: &usd,
                debtors: &debtors,
                creditors: &HashMap::new(),
                today: now().date_naive(),
                rules: &rules,
                now: now(),
            },
        )
    }

    #[test]
    fn valid_payments_process_with_their_bank_body_and_the_others_are_rejected_with_the_check() {
        let good = payment("1250.5", "dac_1");
        let d = decide_with(
            vec![
                good.clone(),
                payment("0", "dac_1"),
                payment("10", "dac_unknown"),
            ],
            Some(SubscriptionStatus::Authorised),
        );
        assert_eq!(d.batch.status, BatchStatus::Processing);
        let statuses: Vec<_> = d
            .payments
            .iter()
            .map(|p| (p.status, p.reason.clone()))
            .collect();
        assert_eq!(
            statuses,
            vec![
                (PaymentStatus::Processing, None),
                (
                    PaymentStatus::Rejected,
                    Some("ValidationFailed: amount".into())
                ),
                (
                    PaymentStatus::Rejected,
                    Some("ValidationFailed: DebtorAccountNotActive".into())
                ),
            ]
        );
        let body = d.payments[0].submission.clone().unwrap();
        assert_eq!(body["amount"], "1250.50");
        assert_eq!(body["debtorAccountId"], "acc_1");
        assert_eq!(body["consentId"], "cns-1");
        assert_eq!(body["reference"], "BILL-1");
        assert_eq!(
            body["creditor"]["bankAccount"]["routingNumber"],
            "021000021"
        );
        assert!(d.payments[1].submission.is_none());
    }

    #[test]
    fn a_batch_check_or_no_valid_payment_rejects_everything() {
        let d = decide_with(vec![payment("1", "dac_1")], None);
        assert_eq!(d.batch.status, BatchStatus::Rejected);
        assert_eq!(d.batch.reason.as_deref(), Some("SubscriptionRequired"));
        assert!(
            d.payments
                .iter()
                .all(|p| p.status == PaymentStatus::Rejected)
        );
        let d = decide_with(
            vec![payment("-1", "dac_1")],
            Some(SubscriptionStatus::Authorised),
        );
        assert_eq!(d.batch.status, BatchStatus::Rejected);
        assert_eq!(
            d.batch.reason.as_deref(),
            Some("ValidationFailed: NoValidPayment")
        );
        assert_eq!(
            d.payments[0].reason.as_deref(),
            Some("ValidationFailed: amount"),
            "the payment says which check it failed"
        );
    }

    #[test]
    fn bank_events_move_a_payment_forward_once_and_in_order() {
        let d = decide_with(
            vec![payment("5", "dac_1")],
            Some(SubscriptionStatus::Authorised),
        );
        let record = d.payments[0].clone();
        let event = |seq, status: &str| BankEvent {
            event_id: format!("e{seq}"),
            payment_id: record.payment_id,
            status: status.into(),
            event_seq: seq,
            completed_at: Some(now()),
            reason_code: Some("AM04".into()),
            reason_message: Some("Insufficient funds".into()),
        };
        assert_eq!(
            apply_event(&record, &event(1, "accepted"), now()),
            None,
            "still Processing"
        );
        let paid = apply_event(&record, &event(3, "settled"), now()).unwrap();
        assert_eq!(
            (paid.status, paid.completed_at, paid.event_seq),
            (PaymentStatus::Paid, Some(now()), 3)
        );
        // The event overtook the submitter's note that the bank holds it: it says so itself.
        assert!(!record.submitted && paid.submitted);
        // A return keeps the payment Paid (nothing new for Sage's PATCH) and is noted once, for
        // the product's message.
        let returned = apply_event(&paid, &event(4, "returned"), now()).unwrap();
        assert_eq!(
            (
                returned.status,
                returned.patched,
                returned.returned.as_deref()
            ),
            (
                PaymentStatus::Paid,
                paid.patched,
                Some("AM04: Insufficient funds")
            )
        );
        assert_eq!(
            apply_event(&returned, &event(4, "returned"), now()),
            None,
            "once"
        );
        assert_eq!(
            return_notice(&returned),
            None,
            "not before Sage has it Paid"
        );
        let at_sage = PaymentRecord {
            patched: true,
            ..returned
        };
        assert_eq!(
            return_notice(&at_sage).unwrap()["message"],
            "AM04: Insufficient funds"
        );
        assert_eq!(
            apply_event(&paid, &event(2, "failed"), now()),
            None,
            "older"
        );
        let failed = apply_event(&record, &event(3, "failed"), now()).unwrap();
        assert_eq!(failed.reason.as_deref(), Some("AM04: Insufficient funds"));
        assert_eq!(
            apply_event(&record, &event(5, "no-such-status"), now()),
            None
        );
    }

    /// `may_change` lets the bank's in-progress pushes skip the record: it must hold for every
    /// status a decided record can have.
    #[test]
    fn an_in_progress_event_never_changes_a_decided_payment() {
        let d = decide_with(
            vec![payment("5", "dac_1"), payment("-1", "dac_1")],
            Some(SubscriptionStatus::Authorised),
        );
        let statuses = [
            PaymentStatus::Processing,
            PaymentStatus::Paid,
            PaymentStatus::Failed,
            PaymentStatus::Rejected,
            PaymentStatus::Cancelled,
        ];
        assert!(d.payments.iter().all(|p| statuses.contains(&p.status)));
        let event = |status: &str| BankEvent {
            event_id: "e".into(),
            payment_id: d.payments[0].payment_id,
            status: status.into(),
            event_seq: 9,
            completed_at: None,
            reason_code: None,
            reason_message: None,
        };
        for status in statuses {
            let record = PaymentRecord {
                status,
                ..d.payments[0].clone()
            };
            for bank in ["accepted", "submitted"] {
                assert!(!may_change(&event(bank)));
                let after = apply_event(&record, &event(bank), now());
                assert_eq!(after, None, "{status:?} {bank}");
            }
        }
        for bank in [
            "settled",
            "failed",
            "rejected",
            "cancelled",
            "returned",
            "new",
        ] {
            assert!(may_change(&event(bank)), "{bank}");
        }
    }
}
