//! Least privilege, checked from what the functions really do: every AWS operation a function
//! (or its event source mapping) was seen making through the local stack's meter must be on the
//! function's `functions/<name>/aws-actions.txt`, the one list its role in `template.yaml` is
//! also checked against (`tools/check_template.py`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};

use crate::meter::OperationCount;
use crate::moto::repo_root;

/// The caller name of a function's event source mapping in the meter.
pub fn event_source_caller(binary: &str) -> String {
    format!("{}{binary}", crate::stack::EVENT_SOURCES_PREFIX)
}

/// The IAM action a metered operation needs (`DynamoDB.PutItem` -> `dynamodb:PutItem`). The
/// batch forms of SQS calls are authorised by their single forms.
pub fn iam_action(operation: &str) -> String {
    let operation = operation.trim_end_matches(" (FIFO)");
    let Some((service, action)) = operation.split_once('.') else {
        return operation.to_string();
    };
    let prefix = match service {
        "DynamoDB" => "dynamodb",
        "SQS" => "sqs",
        "SecretsManager" => "secretsmanager",
        "KMS" => "kms",
        other => return format!("{}:{action}", other.to_lowercase()),
    };
    let action = match (prefix, action) {
        ("sqs", a) if a.ends_with("Batch") => a.trim_end_matches("Batch"),
        (_, a) => a,
    };
    format!("{prefix}:{action}")
}

/// The actions of `aws-actions.txt` text: the first word of each line that is not a comment.
pub fn parse_actions(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The actions listed for a function (its binary name).
pub fn listed_actions(binary: &str) -> Result<BTreeSet<String>> {
    let path = repo_root()
        .join("functions")
        .join(binary)
        .join("aws-actions.txt");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_actions(&text))
}

/// Each operation a function or its event source mapping made that its list lacks, as
/// `"<caller>: <operation> needs <action>"`. Calls of tools and tests are not checked.
pub fn calls_not_listed(
    usage: &BTreeMap<String, BTreeMap<String, OperationCount>>,
    functions: &[String],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for binary in functions {
        let listed = listed_actions(binary)?;
        for caller in [binary.clone(), event_source_caller(binary)] {
            for op in usage.get(&caller).into_iter().flat_map(BTreeMap::keys) {
                if caller != *binary && op.starts_with("SQS.ChangeMessageVisibility") {
                    // The local mapping's shortened retry stands in for the queue's visibility
                    // timeout (`Options::retry_visibility`); Lambda's own mapping never calls it.
                    continue;
                }
                let action = iam_action(op);
                if !listed.contains(&action) {
                    out.push(format!("{caller}: {op} needs {action}"));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_the_actions_iam_checks() {
        assert_eq!(iam_action("DynamoDB.PutItem"), "dynamodb:PutItem");
        assert_eq!(iam_action("SQS.SendMessage (FIFO)"), "sqs:SendMessage");
        assert_eq!(iam_action("SQS.DeleteMessageBatch"), "sqs:DeleteMessage");
        assert_eq!(
            iam_action("SQS.ChangeMessageVisibilityBatch (FIFO)"),
            "sqs:ChangeMessageVisibility"
        );
        assert_eq!(
            iam_action("SecretsManager.GetSecretValue"),
            "secretsmanager:GetSecretValue"
        );
    }

    #[test]
    fn a_list_is_its_first_words_without_comments() {
        let listed = parse_actions(
            "# the pusher\n\ndynamodb:Query ConnectorTable  # the pending index\n  sqs:SendMessage PushQueue PollQueue\n",
        );
        assert_eq!(
            listed.into_iter().collect::<Vec<_>>(),
            ["dynamodb:Query", "sqs:SendMessage"]
        );
    }

    #[test]
    fn a_call_off_the_list_is_reported_with_its_caller() {
        let binary = "statement-pusher".to_string();
        let mut usage = BTreeMap::new();
        let mut ops = BTreeMap::new();
        ops.insert("DynamoDB.Scan".to_string(), OperationCount::default());
        usage.insert(binary.clone(), ops);
        // The local mapping's shortened retry is not Lambda's and is not held against the role.
        let mut mapping = BTreeMap::new();
        mapping.insert(
            "SQS.ChangeMessageVisibility".to_string(),
            OperationCount::default(),
        );
        usage.insert(event_source_caller(&binary), mapping);
        let found = calls_not_listed(&usage, &[binary]).expect("the pusher's list");
        assert_eq!(
            found,
            ["statement-pusher: DynamoDB.Scan needs dynamodb:Scan"]
        );
    }
}
