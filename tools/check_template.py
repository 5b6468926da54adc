#!/usr/bin/env python3
"""What CloudFormation would do with template.yaml, offline.

`cfn-lint` and `sam validate --lint` read the template before the SAM transform runs; a deployment
runs it first, and the transform can refuse what they accept. This runs the transform itself
(the `samtranslator` library CloudFormation uses) for every parameter set the repository
documents, lints what it produces with `cfn-lint`, and checks the result holds what the rest of
the repository says the stack has:

- parameter sets: each `[<env>.deploy.parameters]` of samconfig.toml (placeholders filled in),
  for each partition the secret ARN parameters accept, with each optional parameter (default "")
  empty and set to the example of its Description, so that every Condition is seen both ways
  (parameters a Rule ties together are set together);
- functions: one per directory under functions/ (`Metadata.BuildProperties.Binary`);
- queues and their DLQs: the template's own `AWS::SQS::Queue`s and their `RedrivePolicy`;
- event source mappings, routes and schedules: each function's `Events`, and the trigger of its
  sample event (events/<binary>.json: its route, its queue, or a schedule);
- alarms: the backticked `...Alarm` names of docs/operations.md's alarm headings, with
  `<Function>ErrorRateAlarm` standing for one per function; the topic they notify, and that its
  KMS key lets CloudWatch publish;
- roles: each function's grants exactly the actions of functions/<binary>/aws-actions.txt on the
  resources named there (inline policies, Deny statements and the managed policies the transform
  attaches taken into account); each IAM-authorised route may be invoked by a role of the stack
  that requires an sts:ExternalId, and nothing else by any role;
- logs: a log group with a retention per function, a JSON access log per HTTP API stage.

Run it with the project's virtualenv: `.venv/bin/python tools/check_template.py`. Exits non-zero
on any refusal or missing piece, after printing what it checked.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import itertools
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import boto3
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import (
    to_py27_compatible_template,
    undo_mark_unicode_str_in_template,
)
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent

# One region of each partition (AWS's naming; the transform derives the partition from it).
PARTITION_REGIONS = {
    "aws": "eu-west-1",
    "aws-cn": "cn-north-1",
    "aws-us-gov": "us-gov-west-1",
    "aws-iso": "us-iso-east-1",
    "aws-iso-b": "us-isob-east-1",
}

# What `sam package` puts in place of a local CodeUri.
CODE_PLACEHOLDER = "s3://placeholder-bucket/placeholder-key"

# What the AWS managed policies the transform attaches grant (their published documents), all on
# "*". Any other managed policy on a function's role is a failure.
MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole": {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
    "service-role/AWSLambdaSQSQueueExecutionRole": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
}
# The Lambda runtime writes a function's logs, not its code: not in aws-actions.txt.
RUNTIME_ACTIONS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}

# Values tried, in order, for a `<...>` placeholder of samconfig.toml until the parameter's
# constraints hold (an account id, the 6 characters closing a secret's ARN, free text).
PLACEHOLDER_FILLERS = ["123456789012", "AbC123", "example"]


class Failures:
    """Problems, each with the places (parameter sets, files) it was found in."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}

    def add(self, where: str, what: str) -> None:
        places = self.items.setdefault(what, [])
        if where not in places:
            places.append(where)

    def report(self) -> list[str]:
        lines = []
        for what, places in self.items.items():
            shown = "; ".join(places[:3]) + (f"; and {len(places) - 3} more" if len(places) > 3 else "")
            lines.append(f"{what} [{shown}]")
        return lines


# ------------------------------------------------------------------ intrinsic functions


def evaluate_condition(expr, params: dict, conditions: dict, definitions: dict):
    """Evaluates a Conditions (or Rules) expression to a bool, or a value for Ref/literals."""
    if isinstance(expr, dict) and len(expr) == 1:
        (fn, arg), = expr.items()
        if fn == "Ref":
            return params.get(arg, "")
        if fn == "Condition":
            return condition_value(arg, params, conditions, definitions)
        if fn == "Fn::Equals":
            a, b = (evaluate_condition(x, params, conditions, definitions) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Join":
            # `!Join [",", !Ref SomeList]`: a CommaDelimitedList's value is its text already.
            sep, items = arg
            if isinstance(items, list):
                return sep.join(str(evaluate_condition(x, params, conditions, definitions)) for x in items)
            return str(evaluate_condition(items, params, conditions, definitions)).replace(",", sep)
        if fn == "Fn::Not":
            return not evaluate_condition(arg[0], params, conditions, definitions)
        if fn == "Fn::And":
            return all(evaluate_condition(x, params, conditions, definitions) for x in arg)
        if fn == "Fn::Or":
            return any(evaluate_condition(x, params, conditions, definitions) for x in arg)
        raise ValueError(f"cannot evaluate {fn} in a condition")
    return expr


def condition_value(name: str, params: dict, conditions: dict, definitions: dict) -> bool:
    if name not in conditions:
        conditions[name] = bool(
            evaluate_condition(definitions[name], params, conditions, definitions)
        )
    return conditions[name]


NO_VALUE = object()


def resolve_ifs(node, conditions: dict):
    """The template as CloudFormation sees it under these conditions: `Fn::If` chosen,
    `AWS::NoValue` dropped."""
    if isinstance(node, dict):
        if len(node) == 1 and "Fn::If" in node:
            name, yes, no = node["Fn::If"]
            return resolve_ifs(yes if conditions[name] else no, conditions)
        if node == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        out = {}
        for k, v in node.items():
            r = resolve_ifs(v, conditions)
            if r is not NO_VALUE:
                out[k] = r
        return out
    if isinstance(node, list):
        return [r for r in (resolve_ifs(x, conditions) for x in node) if r is not NO_VALUE]
    return node


def ref_id(value) -> str | None:
    """The logical id a `Ref` or `Fn::GetAtt` names."""
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref" and isinstance(arg, str):
            return arg
        if fn == "Fn::GetAtt":
            return arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
    return None


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


# ------------------------------------------------------------------ what the repository says


def source_template() -> dict:
    return yaml_parse((ROOT / "template.yaml").read_text())


def function_dirs() -> list[str]:
    return sorted(
        p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists()
    )


def template_functions(src: dict, failures: Failures) -> dict[str, str]:
    """Binary (directory under functions/) -> logical id."""
    by_binary = {}
    for lid, res in src["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if not binary:
            failures.add(lid, "no Metadata.BuildProperties.Binary")
            continue
        by_binary[binary] = lid
    dirs = function_dirs()
    for d in dirs:
        if d not in by_binary:
            failures.add("template.yaml", f"functions/{d} has no AWS::Serverless::Function")
    for b, lid in by_binary.items():
        if b not in dirs:
            failures.add(lid, f"its binary {b} is not a directory under functions/")
    return {b: lid for b, lid in by_binary.items() if b in dirs}


def template_queues(src: dict) -> dict[str, str | None]:
    """Queue logical id -> its DLQ's logical id (None for a DLQ itself)."""
    return {
        lid: ref_id(res.get("Properties", {}).get("RedrivePolicy", {}).get("deadLetterTargetArn"))
        for lid, res in src["Resources"].items()
        if res.get("Type") == "AWS::SQS::Queue"
    }


def function_events(src: dict, lid: str) -> dict[str, list]:
    events = src["Resources"][lid].get("Properties", {}).get("Events", {}) or {}
    out: dict[str, list] = {"HttpApi": [], "SQS": [], "Schedule": []}
    for name, ev in events.items():
        props = ev.get("Properties", {})
        kind = ev.get("Type")
        if kind == "HttpApi":
            out["HttpApi"].append(
                {
                    "name": name,
                    "method": props.get("Method", "ANY").upper(),
                    "path": props["Path"],
                    "iam": props.get("Auth", {}).get("Authorizer") == "AWS_IAM",
                    "api": ref_id(props.get("ApiId")),
                }
            )
        elif kind == "SQS":
            out["SQS"].append({"name": name, "queue": ref_id(props.get("Queue"))})
        elif kind in ("Schedule", "ScheduleV2"):
            out["Schedule"].append({"name": name})
        else:
            out.setdefault(kind, []).append({"name": name})
    return out


def runbook_alarms(function_ids: list[str]) -> set[str]:
    """The alarms docs/operations.md has a section for."""
    text = (ROOT / "docs" / "operations.md").read_text()
    names = set()
    for heading in re.findall(r"^#{2,4} .*$", text, flags=re.M):
        for name in re.findall(r"`([A-Za-z<>]+Alarm)`", heading):
            if "<Function>" in name:
                names.update(name.replace("<Function>", f) for f in function_ids)
            else:
                names.add(name)
    return names


def listed_actions(binary: str, failures: Failures) -> dict[str, set[str]]:
    """functions/<binary>/aws-actions.txt: action -> the logical ids it applies to."""
    path = ROOT / "functions" / binary / "aws-actions.txt"
    if not path.exists():
        failures.add(f"functions/{binary}", "no aws-actions.txt")
        return {}
    out: dict[str, set[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        action, resources = tokens[0], set(tokens[1:])
        if not re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action):
            failures.add(f"{path.relative_to(ROOT)}:{n}", f"{action!r} is not an IAM action")
        if action in out:
            failures.add(f"{path.relative_to(ROOT)}:{n}", f"{action} listed twice")
        out.setdefault(action, set()).update(resources)
    return out


# ------------------------------------------------------------------ parameter sets


def check_parameter(name: str, value: str, definition: dict) -> str | None:
    """Why CloudFormation would refuse this value, or None."""
    if "AllowedValues" in definition and value not in [str(v) for v in definition["AllowedValues"]]:
        return f"{value!r} is not one of {definition['AllowedValues']}"
    pattern = definition.get("AllowedPattern")
    if pattern and not re.fullmatch(pattern, value):
        return f"{value!r} does not match {pattern}"
    if definition.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if "MinValue" in definition and number < float(definition["MinValue"]):
            return f"{value} < MinValue {definition['MinValue']}"
        if "MaxValue" in definition and number > float(definition["MaxValue"]):
            return f"{value} > MaxValue {definition['MaxValue']}"
    return None


def fill_placeholders(name: str, value: str, definition: dict) -> str | None:
    holes = re.findall(r"<[^<>]*>", value)
    for fill in itertools.product(PLACEHOLDER_FILLERS, repeat=len(holes)):
        candidate = value
        for hole, f in zip(holes, fill):
            candidate = candidate.replace(hole, f, 1)
        if check_parameter(name, candidate, definition) is None:
            return candidate
    return None


def documented_environments(src: dict, failures: Failures) -> dict[str, dict]:
    """samconfig.toml's deploy environments: name -> (region, parameter values)."""
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    envs = {}
    for env, sections in config.items():
        deploy = sections.get("deploy", {}).get("parameters") if isinstance(sections, dict) else None
        if not deploy or "parameter_overrides" not in deploy:
            continue
        values = {}
        overrides = deploy["parameter_overrides"]
        items = overrides if isinstance(overrides, list) else shlex.split(overrides)
        for item in items:
            key, _, val = item.partition("=")
            definition = src["Parameters"].get(key)
            if definition is None:
                failures.add(f"samconfig.toml [{env}]", f"{key} is not a template parameter")
                continue
            filled = fill_placeholders(key, val, definition)
            if filled is None:
                failures.add(
                    f"samconfig.toml [{env}]",
                    f"{key}={val}: no filling of its placeholders satisfies the parameter "
                    f"({check_parameter(key, val, definition)})",
                )
                continue
            values[key] = filled
        envs[env] = {"region": deploy.get("region", "eu-west-1"), "values": values}
    if not envs:
        failures.add("samconfig.toml", "no [<env>.deploy.parameters] with parameter_overrides")
    return envs


def description_example(definition: dict) -> str | None:
    m = re.search(r"\be\.g\. (\S+?)[;,.)]?(?:\s|$)", definition.get("Description", ""))
    return m.group(1) if m else None


def supported_partitions(src: dict, failures: Failures) -> list[str]:
    """The partitions every Secrets Manager ARN parameter accepts (and only complete ARNs)."""
    accepted = None
    for name, definition in src["Parameters"].items():
        pattern = definition.get("AllowedPattern", "")
        if ":secretsmanager:" not in pattern:
            continue
        ok, partial_ok = set(), []
        for partition, region in PARTITION_REGIONS.items():
            arn = f"arn:{partition}:secretsmanager:{region}:123456789012:secret:connector/x-AbC123"
            if re.fullmatch(pattern, arn):
                ok.add(partition)
            partial = arn.rsplit("-", 1)[0]
            if re.fullmatch(pattern, partial):
                partial_ok.append(partial)
        if partial_ok:
            failures.add(name, f"accepts partial ARNs such as {partial_ok[0]}: the role's policy "
                               "names the ARN given, and a partial one matches no secret")
        if accepted is not None and ok != accepted:
            failures.add(name, f"accepts partitions {sorted(ok)}, other secret ARNs {sorted(accepted)}")
        accepted = ok if accepted is None else accepted & ok
    if not accepted:
        failures.add("template.yaml", "no partition is accepted by every secret ARN parameter")
        return ["aws"]
    return sorted(accepted, key=list(PARTITION_REGIONS).index)


def in_partition(value: str, partition: str, home_region: str) -> str:
    if partition == "aws" or not value.startswith("arn:aws:"):
        return value
    return value.replace("arn:aws:", f"arn:{partition}:", 1).replace(
        f":{home_region}:", f":{PARTITION_REGIONS[partition]}:", 1
    )


def refs_in(node) -> set[str]:
    """Every name a `Ref` in this expression names."""
    if isinstance(node, dict):
        found = set()
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                found.add(v)
            found |= refs_in(v)
        return found
    if isinstance(node, list):
        return set().union(*(refs_in(v) for v in node)) if node else set()
    return set()


def toggle_groups(src: dict, optional: list[str]) -> list[list[str]]:
    """The optional parameters, grouped where a Rule ties them together (a header's name and
    value, a feature's settings): set one without the others and CloudFormation refuses the
    stack, so each group is toggled as one. Every Condition is still seen both ways, and the
    product stays 2^groups, not 2^parameters."""
    parent = {name: name for name in optional}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for rule in src.get("Rules", {}).values():
        tied = [n for n in sorted(refs_in(rule)) if n in parent]
        for other in tied[1:]:
            parent[root(other)] = root(tied[0])
    groups: dict[str, list[str]] = {}
    for name in optional:
        groups.setdefault(root(name), []).append(name)
    return list(groups.values())


def parameter_sets(src: dict, failures: Failures) -> list[dict]:
    envs = documented_environments(src, failures)
    partitions = supported_partitions(src, failures)
    definitions = src["Parameters"]
    optional = [
        name for name, d in definitions.items() if "Default" in d and str(d["Default"]) == ""
    ]
    examples = {}
    for name in optional:
        ex = description_example(definitions[name])
        if ex is None:
            failures.add(name, "optional (default \"\") but its Description gives no 'e.g.' example")
            continue
        why = check_parameter(name, ex, definitions[name])
        if why:
            failures.add(name, f"the Description's example is refused: {why}")
            continue
        examples[name] = ex
    groups = toggle_groups(src, list(examples))
    sets = []
    for env, config in envs.items():
        for partition in partitions:
            for on_groups in itertools.product([False, True], repeat=len(groups)):
                on = [
                    enabled for group, enabled in zip(groups, on_groups) for _ in group
                ]
                names = [name for group in groups for name in group]
                values = {
                    n: str(d["Default"]) for n, d in definitions.items() if "Default" in d
                }
                values.update(config["values"])
                for name, enabled in zip(names, on):
                    values[name] = examples[name] if enabled else ""
                values = {
                    k: in_partition(v, partition, config["region"]) for k, v in values.items()
                }
                given = [n for n, e in zip(names, on) if e]
                label = f"{env}/{partition}, set: {', '.join(given) or 'none'}"
                sets.append(
                    {
                        "label": label,
                        "env": env,
                        "partition": partition,
                        "region": PARTITION_REGIONS[partition],
                        "values": values,
                        "optional": given,
                    }
                )
    return sets


def refusals(src: dict, pset: dict) -> list[str]:
    """What CloudFormation would refuse in these parameter values (constraints, Rules)."""
    out = []
    for name, definition in src["Parameters"].items():
        if name not in pset["values"]:
            out.append(f"{name} has no value and no Default")
            continue
        why = check_parameter(name, pset["values"][name], definition)
        if why:
            out.append(f"{name}: {why}")
    definitions = src.get("Conditions", {})
    for rule_name, rule in src.get("Rules", {}).items():
        conditions: dict = {}
        applies = rule.get("RuleCondition")
        if applies is not None and not evaluate_condition(
            applies, pset["values"], conditions, definitions
        ):
            continue
        for assertion in rule.get("Assertions", []):
            if not evaluate_condition(assertion["Assert"], pset["values"], conditions, definitions):
                out.append(f"rule {rule_name}: {assertion.get('AssertDescription', 'fails')}")
    return out


# ------------------------------------------------------------------ the transform


def packaged(src: dict) -> dict:
    """The template as `sam package` uploads it: code in S3, build metadata left as is."""
    t = copy.deepcopy(src)
    t.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for res in t["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function":
            res.setdefault("Properties", {})["CodeUri"] = CODE_PLACEHOLDER
    return t


def translate(src: dict, pset: dict) -> dict:
    """The SAM transform as CloudFormation runs it, in the parameter set's region: the steps of
    `samtranslator.translator.transform.transform`, which takes the region from the process once
    and for all; a session per call lets one run cover several partitions."""
    template, values = packaged(src), dict(pset["values"])
    to_py27_compatible_template(template, values)
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    translator = Translator(
        None,
        Parser(),
        boto_session=boto3.session.Session(region_name=pset["region"]),
        metrics=metrics,
    )
    try:
        # No managed policy is named in the template, so the name -> ARN map stays empty.
        translated = translator.translate(
            template, parameter_values=values, get_managed_policy_map=lambda: {}
        )
    finally:
        metrics.publish()
    return undo_mark_unicode_str_in_template(translated)


def refusal_text(error: Exception) -> str:
    causes = getattr(error, "causes", None)
    if causes:
        return "; ".join(str(getattr(c, "message", c)) for c in causes)
    return str(getattr(error, "message", error))


# ------------------------------------------------------------------ checks of the translated stack


class Stack:
    """A translated template with the conditions of one parameter set applied."""

    def __init__(self, translated: dict, pset: dict) -> None:
        definitions = translated.get("Conditions", {})
        self.conditions: dict[str, bool] = {}
        for name in definitions:
            condition_value(name, pset["values"], self.conditions, definitions)
        resources = {
            lid: res
            for lid, res in translated["Resources"].items()
            if "Condition" not in res or self.conditions[res["Condition"]]
        }
        self.resources = resolve_ifs(resources, self.conditions)
        self.all_ids = set(translated["Resources"])
        self.outputs = resolve_ifs(translated.get("Outputs", {}), self.conditions)
        self.pset = pset

    def of_type(self, kind: str) -> dict:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == kind}

    def props(self, lid: str) -> dict:
        return self.resources.get(lid, {}).get("Properties", {})


def check_functions(stack: Stack, functions: dict[str, str], where: str, f: Failures) -> int:
    present = stack.of_type("AWS::Lambda::Function")
    for binary, lid in functions.items():
        if lid not in present:
            f.add(where, f"function {lid} (functions/{binary}) missing")
    return len(functions)


def check_queues(stack: Stack, queues: dict, where: str, f: Failures) -> tuple[int, int]:
    present = stack.of_type("AWS::SQS::Queue")
    for q, dlq in queues.items():
        if q not in present:
            f.add(where, f"queue {q} missing")
            continue
        if dlq is None:
            continue
        if dlq not in present:
            f.add(where, f"{q}'s DLQ {dlq} missing")
        target = stack.props(q).get("RedrivePolicy", {}).get("deadLetterTargetArn")
        if ref_id(target) != dlq:
            f.add(where, f"{q} does not redrive to {dlq}")
    dlqs = {d for d in queues.values() if d}
    return len(queues) - len(dlqs), len(dlqs)


def check_event_sources(stack: Stack, src: dict, functions: dict, where: str, f: Failures) -> int:
    mappings = stack.of_type("AWS::Lambda::EventSourceMapping").values()
    count = 0
    for lid in functions.values():
        for ev in function_events(src, lid)["SQS"]:
            count += 1
            if not any(
                ref_id(m["Properties"].get("FunctionName")) == lid
                and ref_id(m["Properties"].get("EventSourceArn")) == ev["queue"]
                for m in mappings
            ):
                f.add(where, f"no event source mapping from {ev['queue']} to {lid} ({ev['name']})")
    if len(mappings) != count:
        f.add(where, f"{len(mappings)} event source mappings, the functions' events name {count}")
    return count


def check_schedules(stack: Stack, src: dict, functions: dict, where: str, f: Failures) -> int:
    rules = stack.of_type("AWS::Events::Rule").values()
    count = 0
    for lid in functions.values():
        for ev in function_events(src, lid)["Schedule"]:
            count += 1
            if not any(
                any(ref_id(t.get("Arn")) == lid for t in r["Properties"].get("Targets", []))
                for r in rules
            ):
                f.add(where, f"no schedule rule invokes {lid} ({ev['name']})")
    return count


def check_routes(stack: Stack, src: dict, functions: dict, where: str, f: Failures) -> int:
    apis = stack.of_type("AWS::ApiGatewayV2::Api")
    expected = {}
    for lid in functions.values():
        for ev in function_events(src, lid)["HttpApi"]:
            expected[(ev["api"], ev["path"], ev["method"].lower())] = (lid, ev)
    seen = set()
    for api_id, api in apis.items():
        for path, methods in api["Properties"].get("Body", {}).get("paths", {}).items():
            for method, op in methods.items():
                key = (api_id, path, method)
                seen.add(key)
                if key not in expected:
                    f.add(where, f"{api_id} routes {method.upper()} {path}, which no function's events name")
                    continue
                lid, ev = expected[key]
                uri = json.dumps(op.get("x-amazon-apigateway-integration", {}).get("uri"))
                if f"${{{lid}.Arn}}" not in uri:
                    f.add(where, f"{method.upper()} {path} does not integrate {lid}")
                iam = any("AWS_IAM" in s for s in op.get("security", []))
                if iam != ev["iam"]:
                    f.add(where, f"{method.upper()} {path}: IAM authorisation {iam}, the event says {ev['iam']}")
    for key, (lid, ev) in expected.items():
        if key not in seen:
            f.add(where, f"route {key[2].upper()} {key[1]} of {lid} ({ev['name']}) missing from {key[0]}")
    permissions = stack.of_type("AWS::Lambda::Permission").values()
    for lid in {lid for lid, _ in expected.values()}:
        if not any(
            ref_id(p["Properties"].get("FunctionName")) == lid
            and p["Properties"].get("Principal") == "apigateway.amazonaws.com"
            for p in permissions
        ):
            f.add(where, f"API Gateway may not invoke {lid} (no AWS::Lambda::Permission)")
    return len(expected)


def check_api_callers(stack: Stack, src: dict, functions: dict, where: str, f: Failures) -> int:
    """The IAM-authorised routes: a role of the stack may invoke each, from another account only
    with an sts:ExternalId, and no role may invoke anything else."""
    iam_routes = {
        f"{ev['api']}/*/{ev['method']}{ev['path']}"
        for lid in functions.values()
        for ev in function_events(src, lid)["HttpApi"]
        if ev["iam"]
    }
    prefix = "arn:AWS::Partition:execute-api:AWS::Region:AWS::AccountId:"
    callable_routes = set()
    for role_id, role in stack.of_type("AWS::IAM::Role").items():
        invokes = set()
        for policy in role["Properties"].get("Policies", []):
            for st in as_list(policy["PolicyDocument"].get("Statement", [])):
                actions = as_list(st.get("Action", []))
                if st.get("Effect") != "Allow" or not any(
                    fnmatch.fnmatchcase("execute-api:Invoke", a) for a in actions
                ):
                    continue
                for r in as_list(st.get("Resource", [])):
                    token = resource_token(r)
                    route = token[len(prefix):] if token.startswith(prefix) else token
                    if route not in iam_routes:
                        f.add(where, f"{role_id} may invoke {token}, not an IAM-authorised route")
                    invokes.add(route)
        if not invokes:
            continue
        callable_routes |= invokes
        for st in as_list(role["Properties"]["AssumeRolePolicyDocument"].get("Statement", [])):
            principal = st.get("Principal", {})
            if st.get("Effect") == "Allow" and isinstance(principal, dict) and "AWS" in principal:
                if "sts:ExternalId" not in json.dumps(st.get("Condition", {}).get("StringEquals", {})):
                    f.add(where, f"{role_id} trusts {principal['AWS']} without an sts:ExternalId condition")
        outputs = stack.outputs.values()
        if not any(ref_id(o.get("Value")) == role_id for o in outputs):
            f.add(where, f"no stack output gives {role_id}'s ARN to the caller")
    for route in sorted(iam_routes - callable_routes):
        f.add(where, f"no role of the stack may invoke the IAM-authorised route {route}")
    return len(iam_routes)


def retained_group(stack: Stack, ref, what: str, where: str, f: Failures) -> bool:
    group = ref_id(ref)
    if group not in stack.of_type("AWS::Logs::LogGroup"):
        f.add(where, f"{what} does not log to a log group of the stack")
        return False
    if "RetentionInDays" not in stack.props(group):
        f.add(where, f"{what}'s log group {group} keeps its logs for ever (no RetentionInDays)")
        return False
    return True


def check_logs(stack: Stack, functions: dict, where: str, f: Failures) -> tuple[int, int]:
    """Each function logs to its own group with a retention; each HTTP API stage writes an access
    log (JSON of $context variables, nothing of the request's content) to one."""
    groups = set()
    for lid in functions.values():
        ref = stack.props(lid).get("LoggingConfig", {}).get("LogGroup")
        if retained_group(stack, ref, lid, where, f):
            if ref_id(ref) in groups:
                f.add(where, f"{lid} shares its log group {ref_id(ref)}")
            groups.add(ref_id(ref))
    stages = 0
    for stage_id, stage in stack.of_type("AWS::ApiGatewayV2::Stage").items():
        stages += 1
        settings = stage["Properties"].get("AccessLogSettings")
        if not settings:
            f.add(where, f"{stage_id} ({ref_id(stage['Properties'].get('ApiId'))}) writes no access log")
            continue
        retained_group(stack, settings.get("DestinationArn"), f"{stage_id}'s access log", where, f)
        try:
            fields = json.loads(settings.get("Format", ""))
        except ValueError:
            f.add(where, f"{stage_id}'s access log format is not JSON")
            continue
        for name, value in fields.items():
            if not re.fullmatch(r"\$context\.[A-Za-z.]+", str(value)) or re.search(
                r"authorizer|apiKey|header", str(value), flags=re.I
            ):
                f.add(where, f"{stage_id}'s access log field {name} logs {value}")
    return len(groups), stages


def check_sample_events(stack: Stack, functions: dict, where: str, f: Failures) -> int:
    """Each function is triggered the way its sample event (events/<binary>.json, the event its
    handler's test parses) says: that route, that queue, or a schedule."""
    api_routes = {}
    for api in stack.of_type("AWS::ApiGatewayV2::Api").values():
        for path, methods in api["Properties"].get("Body", {}).get("paths", {}).items():
            for method, op in methods.items():
                uri = json.dumps(op.get("x-amazon-apigateway-integration", {}).get("uri"))
                api_routes[f"{method.upper()} {path}"] = uri
    mappings = stack.of_type("AWS::Lambda::EventSourceMapping").values()
    rules = stack.of_type("AWS::Events::Rule").values()
    checked = 0
    for binary, lid in functions.items():
        path = ROOT / "events" / f"{binary}.json"
        if not path.exists():
            f.add(f"events/{binary}.json", "missing: each function has a sample event")
            continue
        event = json.loads(path.read_text())
        checked += 1
        if "routeKey" in event:
            if f"${{{lid}.Arn}}" not in api_routes.get(event["routeKey"], ""):
                f.add(where, f"{lid} does not serve {event['routeKey']} (events/{binary}.json)")
        elif event.get("Records") and event["Records"][0].get("eventSource") == "aws:sqs":
            # The queue's name holds its logical id, as CloudFormation names queues.
            name = event["Records"][0]["eventSourceARN"].rsplit(":", 1)[-1].removesuffix(".fifo")
            if not any(
                ref_id(m["Properties"].get("FunctionName")) == lid
                and ref_id(m["Properties"].get("EventSourceArn")) in name.split("-")
                for m in mappings
            ):
                f.add(where, f"no event source mapping from {name} to {lid} (events/{binary}.json)")
        elif event.get("detail-type") == "Scheduled Event":
            if not any(
                any(ref_id(t.get("Arn")) == lid for t in r["Properties"].get("Targets", []))
                for r in rules
            ):
                f.add(where, f"no schedule invokes {lid} (events/{binary}.json)")
        else:
            f.add(f"events/{binary}.json", "neither an HTTP API, an SQS nor a scheduled event")
    return checked


def check_alarms(stack: Stack, expected: set[str], where: str, f: Failures) -> int:
    alarms = stack.of_type("AWS::CloudWatch::Alarm")
    for name in sorted(expected - alarms.keys()):
        f.add(where, f"alarm {name} (docs/operations.md) missing")
    for name in sorted(alarms.keys() - expected):
        f.add(where, f"alarm {name} has no section in docs/operations.md")
    topics = set()
    for name, alarm in alarms.items():
        actions = [ref_id(a) for a in alarm["Properties"].get("AlarmActions", [])]
        if not actions or None in actions:
            f.add(where, f"alarm {name} notifies no topic of the stack")
        topics.update(a for a in actions if a)
    for topic in topics:
        if topic not in stack.of_type("AWS::SNS::Topic"):
            f.add(where, f"alarms notify {topic}, which is not an SNS topic of the stack")
            continue
        key = stack.props(topic).get("KmsMasterKeyId")
        if key is not None:
            check_topic_key(stack, topic, key, where, f)
    return len(expected)


def check_topic_key(stack: Stack, topic: str, key, where: str, f: Failures) -> None:
    """CloudWatch publishes to an encrypted topic only with the key's policy on its side (the
    AWS-managed alias/aws/sns key never allows it)."""
    key_id = ref_id(key)
    if key_id not in stack.of_type("AWS::KMS::Key"):
        f.add(where, f"{topic} is encrypted with {key}, a key whose policy the stack does not set: "
                     "CloudWatch cannot publish the alarms")
        return
    props = stack.props(key_id)
    needed = {"kms:Decrypt", "kms:GenerateDataKey"}
    for st in as_list(props.get("KeyPolicy", {}).get("Statement", [])):
        services = as_list(st.get("Principal", {}).get("Service", [])) if isinstance(
            st.get("Principal"), dict) else []
        if st.get("Effect") == "Allow" and "cloudwatch.amazonaws.com" in services:
            needed = {n for n in needed if not any(
                fnmatch.fnmatchcase(n, a) for a in as_list(st.get("Action", [])))}
    if needed:
        f.add(where, f"{key_id}'s policy does not let cloudwatch.amazonaws.com {sorted(needed)}: "
                     f"alarms cannot publish to {topic}")
    if props.get("EnableKeyRotation") is not True:
        f.add(where, f"{key_id} does not rotate")


def resource_token(resource) -> str:
    """A policy's resource as aws-actions.txt names it: the logical id (`X` for `!GetAtt X.Arn`
    or `!Ref X`, `X/index/i` for `!Sub "${X.Arn}/index/i"`), or `*`."""
    rid = ref_id(resource)
    if rid:
        return rid
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])

        def name(m):
            var = m.group(1)
            if var in variables:
                return resource_token(variables[var])
            return var.split(".", 1)[0] if var.endswith(".Arn") else var

        return re.sub(r"\$\{([^}]+)\}", name, text)
    return resource if isinstance(resource, str) else json.dumps(resource)


def granted_actions(stack: Stack, role_id: str, where: str, f: Failures) -> tuple[dict, int]:
    """What a role lets its holder do: action -> resource tokens, after its Deny statements; and
    how many actions of the Lambda runtime (logs) were set aside."""
    role = stack.props(role_id)
    documents = [p["PolicyDocument"] for p in role.get("Policies", [])]
    for res in stack.resources.values():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and any(
            ref_id(r) == role_id for r in res["Properties"].get("Roles", [])
        ):
            documents.append(res["Properties"]["PolicyDocument"])
    allowed: dict[str, set[str]] = {}
    denied: list[tuple[set[str], set[str], bool]] = []
    for document in documents:
        for st in as_list(document.get("Statement", [])):
            if "NotAction" in st:
                f.add(where, f"{role_id} has a NotAction statement (grants too much to compare)")
                continue
            actions = set(as_list(st.get("Action", [])))
            if st.get("Effect") == "Allow":
                if "NotResource" in st:
                    f.add(where, f"{role_id} allows {sorted(actions)} on NotResource")
                    continue
                tokens = {resource_token(r) for r in as_list(st.get("Resource", []))}
                # A key is used through a service (Secrets Manager), or directly for one purpose
                # named by the encryption context; never unconditionally.
                condition = json.dumps(st.get("Condition", {}))
                if any(a.startswith("kms:") for a in actions) and not (
                    "kms:ViaService" in condition or "kms:EncryptionContext:" in condition
                ):
                    f.add(
                        where,
                        f"{role_id} allows {sorted(actions)} without a kms:ViaService or kms:EncryptionContext condition",
                    )
                for a in actions:
                    allowed.setdefault(a, set()).update(tokens)
            elif "NotResource" in st:
                denied.append((actions, {resource_token(r) for r in as_list(st["NotResource"])}, True))
            else:
                denied.append((actions, {resource_token(r) for r in as_list(st["Resource"])}, False))
    runtime = 0
    for arn in role.get("ManagedPolicyArns", []):
        m = re.fullmatch(r"arn:([a-z-]+):iam::aws:policy/(.+)", arn if isinstance(arn, str) else "")
        if not m or m.group(2) not in MANAGED_POLICIES:
            f.add(where, f"{role_id} has managed policy {arn}, whose grants are not known here")
            continue
        if m.group(1) != stack.pset["partition"]:
            f.add(where, f"{role_id}: {arn} is not in partition {stack.pset['partition']}")
        for a in MANAGED_POLICIES[m.group(2)]:
            if a in RUNTIME_ACTIONS:
                runtime += 1
                continue
            allowed.setdefault(a, set()).add("*")
    for actions, tokens, all_but in denied:
        for a in actions & allowed.keys():
            if all_but:
                allowed[a] = tokens if "*" in allowed[a] else allowed[a] & tokens
            else:
                allowed[a] -= tokens
    return {a: t for a, t in allowed.items() if t}, runtime


def check_roles(stack: Stack, src: dict, functions: dict, where: str, f: Failures) -> tuple[int, int]:
    """Each function's role grants exactly what functions/<binary>/aws-actions.txt lists."""
    known = set(src["Parameters"]) | set(stack.all_ids)
    n_actions = runtime = 0
    for binary, lid in functions.items():
        listed = listed_actions(binary, f)
        role_id = ref_id(stack.props(lid).get("Role"))
        if role_id not in stack.resources:
            f.add(where, f"{lid} has no role of the stack")
            continue

        def present(token: str) -> bool:
            base = token.split("/", 1)[0]
            if base not in known:
                f.add(where, f"functions/{binary}/aws-actions.txt names {token}, not in the template")
                return False
            if base in src["Parameters"]:
                return stack.pset["values"].get(base, "") != ""
            return base in stack.resources

        expected = {}
        for action, tokens in listed.items():
            here = {t for t in tokens if present(t)}
            if here or not tokens:
                expected[action] = here
        granted, ignored = granted_actions(stack, role_id, where, f)
        runtime += ignored
        for a in sorted(granted.keys() - expected.keys()):
            f.add(where, f"{lid}'s role grants {a} ({', '.join(sorted(granted[a]))}), "
                         f"not in functions/{binary}/aws-actions.txt")
        for a in sorted(expected.keys() - granted.keys()):
            f.add(where, f"{lid}'s role lacks {a}, listed in functions/{binary}/aws-actions.txt")
        for a in sorted(expected.keys() & granted.keys()):
            if expected[a] and granted[a] != expected[a]:
                f.add(where, f"{lid}'s role grants {a} on {', '.join(sorted(granted[a]))}; "
                             f"aws-actions.txt says {', '.join(sorted(expected[a]))}")
        n_actions += len(expected)
    return n_actions, runtime


# ------------------------------------------------------------------ main


def lint(paths: list[Path], f: Failures) -> None:
    """cfn-lint on the translated templates (one process for all of them)."""
    run = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
    )
    for line in run.stdout.splitlines():
        print(f"  cfn-lint: {line}")
    # cfn-lint's exit code is a bit mask: 2 = errors (4 warnings, 8 informational).
    if run.returncode & 2 or run.returncode & 1:
        f.add("cfn-lint on the translated template", f"exit {run.returncode} {run.stderr.strip()}")


def main() -> int:
    started = time.monotonic()
    f = Failures()
    src = source_template()
    functions = template_functions(src, f)
    queues = template_queues(src)
    alarms = runbook_alarms(sorted(functions.values()))
    sets = parameter_sets(src, f)
    seen_conditions: dict[str, set[bool]] = {c: set() for c in src.get("Conditions", {})}
    translated_files: dict[str, Path] = {}
    tmp_dir = tempfile.TemporaryDirectory(prefix="check-template-")
    tmp = Path(tmp_dir.name)
    print(f"{len(sets)} parameter sets (samconfig.toml environments x partitions x optional parameters)")
    for pset in sets:
        where = pset["label"]
        refused = refusals(src, pset)
        if refused:
            # CloudFormation would refuse these values before the transform runs: not a stack.
            print(f"  {where}: refused by the parameters' constraints or Rules ({refused[0]})")
            if not pset["optional"]:
                f.add(where, f"samconfig.toml's values are refused: {'; '.join(refused)}")
            continue
        evaluated: dict[str, bool] = {}
        for c in src.get("Conditions", {}):
            seen_conditions[c].add(
                condition_value(c, pset["values"], evaluated, src["Conditions"])
            )
        try:
            translated = translate(src, pset)
        except Exception as e:  # the transform's refusal, reported as CloudFormation would
            f.add(where, f"the SAM transform refuses the template: {refusal_text(e)}")
            continue
        body = json.dumps(translated, sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()[:12]
        if digest not in translated_files:
            path = tmp / f"translated-{pset['partition']}-{digest}.json"
            path.write_text(json.dumps(translated, indent=1))
            translated_files[digest] = path
        stack = Stack(translated, pset)
        n_functions = check_functions(stack, functions, where, f)
        n_queues, n_dlqs = check_queues(stack, queues, where, f)
        n_esm = check_event_sources(stack, src, functions, where, f)
        n_schedules = check_schedules(stack, src, functions, where, f)
        n_routes = check_routes(stack, src, functions, where, f)
        n_samples = check_sample_events(stack, functions, where, f)
        n_alarms = check_alarms(stack, alarms, where, f)
        n_actions, n_runtime = check_roles(stack, src, functions, where, f)
        n_iam = check_api_callers(stack, src, functions, where, f)
        n_groups, n_access = check_logs(stack, functions, where, f)
        print(
            f"  {where}: {n_functions} functions, {n_queues} queues + {n_dlqs} DLQs, "
            f"{n_esm} event source mappings, {n_schedules} schedules, {n_routes} routes "
            f"({n_iam} IAM-authorised, callable by a role), {n_samples} functions triggered as "
            f"their sample events say, {n_alarms} alarms, "
            f"{n_actions} role actions as listed (+{n_runtime} logs actions of the Lambda runtime), "
            f"{n_groups} function log groups with retention, {n_access} API access log"
        )
    for c, values in seen_conditions.items():
        if values != {True, False}:
            f.add("parameter sets", f"condition {c} is only ever {sorted(values)}")
    if translated_files:
        print(f"cfn-lint on {len(translated_files)} distinct translated templates")
        lint(list(translated_files.values()), f)
    tmp_dir.cleanup()
    took = time.monotonic() - started
    if f.items:
        print(f"\n{len(f.items)} problems ({took:.1f} s):")
        for line in f.report():
            print(f"  - {line}")
        return 1
    print(f"template checks passed ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
