#!/usr/bin/env bash
# Checks infra/template.yaml offline, without AWS credentials: cfn-lint, `sam validate --lint`,
# and that the template agrees with the code. The metadata table must match
# CLOUDFORMATION_TABLE in shared/meta-dynamodb/src/schema.rs, and each registry function's
# IAM actions must be exactly what the S3 and DynamoDB adapters call for the registry (the
# pull function's, reads only). The DynamoDB adapter's account store (accounts.rs) is the
# token function's: it gets the reads and exactly the writes the account store makes,
# limited to the account partitions by a dynamodb:LeadingKeys condition. The registry
# functions may read the public token keys' parameter only, the token function the private
# one only. The replication store (replication.rs) is the token and events functions': they
# get exactly its actions, their writes limited to the REPL# partitions (the events function
# also writes what a push writes, in repository and upload partitions). The events function
# has the push function's S3 rights, runs its jobs from ReplicationQueue (whose visibility
# timeout covers six of its timeouts, with a dead-letter queue), and only it and the token
# function use the replication KMS key, with its encryption context. Installs cfn-lint and
# the SAM CLI with pip when missing. Exits non-zero on any finding, warnings included.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
template=infra/template.yaml

export SAM_CLI_TELEMETRY=0
# The SAM translator needs a region to resolve pseudo parameters; nothing is sent to it.
# A fixed AWS region, whatever AWS_REGION says: the test services export their own (Garage's
# is "garage"), which cfn-lint would refuse as unknown.
region=us-east-1
export AWS_REGION=$region AWS_DEFAULT_REGION=$region

have_tools() {
    command -v cfn-lint >/dev/null && command -v sam >/dev/null &&
        python3 -c 'import cfnlint' 2>/dev/null
}

if ! have_tools; then
    echo "check-infra: installing cfn-lint and the SAM CLI with pip" >&2
    python3 -m pip install --quiet --disable-pip-version-check aws-sam-cli cfn-lint
    # pip puts the commands in the interpreter's scripts directory, or the user's with --user.
    PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    PATH="$PATH:$(python3 -m site --user-base)/bin"
    hash -r
    if ! have_tools; then
        echo "check-infra: cfn-lint or sam is still not usable after pip install" >&2
        exit 1
    fi
fi

status=0

echo "== cfn-lint $template"
cfn-lint --regions "$region" -- "$template" || status=1

echo "== sam validate --lint"
sam validate --lint --region "$region" --template-file "$template" || status=1

echo "== template against the code"
python3 - "$template" <<'PY' || status=1
import json
import pathlib
import re
import sys

from cfnlint.data import AdditionalSpecs
from cfnlint.decode import cfn_yaml, decode
from cfnlint.helpers import load_resource

TEMPLATE = sys.argv[1]
SCHEMA_RS = pathlib.Path("shared/meta-dynamodb/src/schema.rs")
S3_ADAPTER = pathlib.Path("shared/store-s3/src")
DYNAMODB_ADAPTER = pathlib.Path("shared/meta-dynamodb/src")
# The AccountStore adapter (users, projects, robots, login failures): the registry functions
# never call it, so its actions are no part of theirs. Its calls must still be mapped.
DYNAMODB_ACCOUNTS = DYNAMODB_ADAPTER / "accounts.rs"
# The ReplicationStore adapter: the token function's replication API and the events function
# call it, the registry functions never do.
DYNAMODB_REPLICATION = DYNAMODB_ADAPTER / "replication.rs"
# Reads the stream's records; makes no request.
DYNAMODB_STREAM = DYNAMODB_ADAPTER / "stream.rs"
# The replication adapters of the runtime: SQS and KMS calls.
AWS_REPLICATION = pathlib.Path("shared/runtime/src/replication_aws.rs")

# Table properties the template may add: none changes the schema the code relies on.
TABLE_EXTRAS = {
    "TableName",
    "PointInTimeRecoverySpecification",
    "SSESpecification",
    "StreamSpecification",
    "DeletionProtectionEnabled",
    "ContributorInsightsSpecification",
    "TableClass",
    "Tags",
}

# SDK operation -> the IAM actions it needs.
S3_OPERATIONS = {
    # A HEAD of a missing key answers 404 only to a caller allowed to list the bucket.
    "head_object": {"s3:GetObject", "s3:ListBucket"},
    "get_object": {"s3:GetObject"},
    "put_object": {"s3:PutObject"},
    "copy_object": {"s3:GetObject", "s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "upload_part_copy": {"s3:GetObject", "s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "list_parts": {"s3:ListMultipartUploadParts"},
    "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
    "delete_object": {"s3:DeleteObject"},
    "delete_objects": {"s3:DeleteObject"},
    "list_objects_v2": {"s3:ListBucket"},
    "head_bucket": {"s3:ListBucket"},
}
DYNAMODB_OPERATIONS = {
    "get_item": {"dynamodb:GetItem"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
    # Authorized per contained action: see DYNAMODB_TRANSACTION_ITEMS.
    "transact_write_items": set(),
    "transact_get_items": set(),
}
DYNAMODB_TRANSACTION_ITEMS = {
    "Put": {"dynamodb:PutItem"},
    "Update": {"dynamodb:UpdateItem"},
    "Delete": {"dynamodb:DeleteItem"},
    "ConditionCheck": {"dynamodb:ConditionCheckItem"},
    "Get": {"dynamodb:GetItem"},
}
# The table helpers of shared/meta-dynamodb/src/store.rs -> the IAM actions they need.
STORE_HELPERS = {
    "get": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "query_all": {"dynamodb:Query"},
    "batch_get_items": {"dynamodb:BatchGetItem"},
}
# Table administration for `berth init` and tests; the registry functions never call it.
DYNAMODB_ADMINISTRATION = {
    "create_table",
    "describe_table",
    "update_time_to_live",
    "describe_time_to_live",
}
# Client methods that are not requests.
CLIENT_ACCESSORS = {"config", "clone"}
# The SQS and KMS calls of the replication adapters.
AWS_REPLICATION_OPERATIONS = {
    "send_message": {"sqs:SendMessage"},
    "receive_message": {"sqs:ReceiveMessage"},
    "encrypt": {"kms:Encrypt"},
    "decrypt": {"kms:Decrypt"},
}
# What Lambda's event source mappings call with the function's role.
STREAM_READ = {
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
}
QUEUE_CONSUMER = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}
# The partitions of replication records, and of what a push writes.
REPLICATION_PARTITIONS = {"REPL#*"}
REGISTRY_PARTITIONS = {"REPO#*", "UPLOAD#*"}
# The encryption context replication credentials are sealed with (replication_aws.rs).
CREDENTIAL_CONTEXT = {"kms:EncryptionContext:berth": "replication-credential"}
READ_ONLY = {
    "s3:GetObject",
    "s3:ListBucket",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
}

findings = []


def show(value):
    return json.dumps(value, sort_keys=True, default=str)


def sources(location, excluded=frozenset()):
    """The Rust sources at `location` (a file, or a directory searched recursively)."""
    paths = [location] if location.is_file() else sorted(location.rglob("*.rs"))
    for path in paths:
        if path not in excluded:
            yield path, path.read_text()


def calls(location, operations, ignored=frozenset(), excluded=frozenset()):
    """The IAM actions the SDK calls `client.<operation>(` at `location` need."""
    needed = set()
    for path, text in sources(location, excluded):
        for match in re.finditer(r"\bclient\s*\.\s*([a-z0-9_]+)\s*\(", text):
            operation = match.group(1)
            if operation in ignored:
                continue
            if operation not in operations:
                findings.append(
                    f"{path}: unmapped SDK call client.{operation}(): add it to "
                    "scripts/check-infra.sh and its IAM actions to the template"
                )
                continue
            needed |= operations[operation]
    return needed


def check_table(template):
    text = SCHEMA_RS.read_text()
    const = re.search(r'CLOUDFORMATION_TABLE: &str = r(#*)"(.*?)"\1;', text, re.S)
    if not const:
        findings.append(f"{SCHEMA_RS}: CLOUDFORMATION_TABLE not found")
        return
    ((logical_id, expected),) = cfn_yaml.loads(const.group(2)).items()
    actual = template.get("Resources", {}).get(logical_id)
    if actual is None:
        findings.append(f"{TEMPLATE}: no resource {logical_id}")
        return
    if actual.get("Type") != expected["Type"]:
        findings.append(f"{logical_id}: type {actual.get('Type')}, expected {expected['Type']}")
    properties = actual.get("Properties", {})
    for key, value in expected["Properties"].items():
        if properties.get(key) != value:
            findings.append(
                f"{logical_id}.{key}: template has {show(properties.get(key))}, "
                f"CLOUDFORMATION_TABLE has {show(value)}"
            )
    for key in sorted(set(properties) - set(expected["Properties"]) - TABLE_EXTRAS):
        findings.append(f"{logical_id}.{key} is not in CLOUDFORMATION_TABLE")


def allowed_actions(name, function):
    actions = set()
    for policy in function.get("Properties", {}).get("Policies", []):
        if not isinstance(policy, dict) or "Statement" not in policy:
            findings.append(f"{name}: write its policies out as statements, not {show(policy)}")
            continue
        for statement in policy["Statement"]:
            if statement.get("Effect") == "Allow":
                action = statement.get("Action", [])
                actions |= {action} if isinstance(action, str) else set(action)
    return actions


def check_iam(template):
    known = load_resource(AdditionalSpecs, "Policies.json")
    s3 = calls(S3_ADAPTER, S3_OPERATIONS, CLIENT_ACCESSORS)
    ignored = CLIENT_ACCESSORS | DYNAMODB_ADMINISTRATION
    excluded = {DYNAMODB_ACCOUNTS, DYNAMODB_REPLICATION, DYNAMODB_STREAM}
    dynamodb = calls(DYNAMODB_ADAPTER, DYNAMODB_OPERATIONS, ignored, excluded)
    for path, text in sources(DYNAMODB_ADAPTER, excluded):
        for item in re.findall(r"\b([A-Z][A-Za-z]*)::builder\s*\(", text):
            dynamodb |= DYNAMODB_TRANSACTION_ITEMS.get(item, set())
    # The account adapter calls the SDK directly and through the table helpers of store.rs.
    accounts = calls(DYNAMODB_ACCOUNTS, DYNAMODB_OPERATIONS, ignored)
    account_text = DYNAMODB_ACCOUNTS.read_text()
    for item in re.findall(r"\b([A-Z][A-Za-z]*)::builder\s*\(", account_text):
        accounts |= DYNAMODB_TRANSACTION_ITEMS.get(item, set())
    for item in re.findall(r"TransactWriteItem::builder\(\)\s*\.\s*([a-z_]+)\(", account_text):
        accounts |= DYNAMODB_TRANSACTION_ITEMS.get(item.capitalize(), set())
    for helper in re.findall(r"\.\s*([a-z_]+)\s*\(", account_text):
        accounts |= STORE_HELPERS.get(helper, set())
    # Deletes built for a transaction (`Delete`s handed to `transaction_items`).
    if re.search(r"\bItem\s*=\s*Delete\b", account_text):
        accounts |= {"dynamodb:DeleteItem"}
    needed = s3 | dynamodb
    # The replication store calls the SDK directly and through the table helpers.
    replication = calls(DYNAMODB_REPLICATION, DYNAMODB_OPERATIONS, ignored)
    replication_text = DYNAMODB_REPLICATION.read_text()
    for helper in re.findall(r"\.\s*([a-z_]+)\s*\(", replication_text):
        replication |= STORE_HELPERS.get(helper, set())
    if re.search(r"::builder\s*\(", replication_text) and "transact" in replication_text:
        findings.append(f"{DYNAMODB_REPLICATION}: map its transactions in scripts/check-infra.sh")
    carriers = calls(AWS_REPLICATION, AWS_REPLICATION_OPERATIONS, CLIENT_ACCESSORS)

    functions = {}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        actions = allowed_actions(name, resource)
        for action in sorted(actions):
            service, _, verb = action.partition(":")
            if verb.lower() not in known.get(service, {}).get("Actions", {}):
                findings.append(f"{name}: {action} is not an IAM action")
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        functions[binary] = (name, actions)
        check_parameters(name, binary, resource)

    for binary in ("registry-pull", "registry-push"):
        if binary not in functions:
            findings.append(f"{TEMPLATE}: no function builds the binary {binary}")
    # Their ssm: actions are checked by check_parameters.
    functions = {
        binary: (name, {a for a in actions if not a.startswith("ssm:")} if binary != "token" else actions)
        for binary, (name, actions) in functions.items()
    }
    if "registry-pull" in functions:
        name, actions = functions["registry-pull"]
        for action in sorted(actions - READ_ONLY):
            findings.append(f"{name}: {action} is not read-only")
        for action in sorted(actions - needed):
            findings.append(f"{name}: {action} is not used by the adapters")
    if "registry-push" in functions:
        name, actions = functions["registry-push"]
        for action in sorted(needed - actions):
            findings.append(f"{name}: lacks {action}, which the adapters need")
        for action in sorted(actions - needed):
            findings.append(f"{name}: {action} is not used by the adapters")
    if "token" not in functions:
        findings.append(f"{TEMPLATE}: no function builds the binary token")
    else:
        name, actions = functions["token"]
        # Reads of accounts and repositories, the account adapter's writes, the signing key.
        # The replication API: the store, queueing jobs, reading dead letters, sealing.
        api = replication | carriers
        allowed = (
            READ_ONLY - {"dynamodb:Scan"} - S3_ACTIONS
            | accounts
            | api
            | {"ssm:GetParameter", "kms:Decrypt"}
        )
        for action in sorted(actions - allowed):
            findings.append(f"{name}: {action} is not what the token function needs")
        for action in sorted((accounts | {"ssm:GetParameter"}) - actions):
            findings.append(f"{name}: lacks {action}, which the account adapter needs")
        for action in sorted(api - actions):
            findings.append(f"{name}: lacks {action}, which the replication API needs")
        check_writes(name, template["Resources"][name], [ACCOUNT_PARTITIONS, REPLICATION_PARTITIONS])
        check_decrypt(name, template["Resources"][name], {"kms:Encrypt", "kms:Decrypt"})
        check_queues(name, template["Resources"][name],
                     {"ReplicationQueue": {"sqs:SendMessage"},
                      "ReplicationDeadLetterQueue": {"sqs:ReceiveMessage"}})
    if "events" not in functions:
        findings.append(f"{TEMPLATE}: no function builds the binary events")
    else:
        name, actions = functions["events"]
        resource = template["Resources"][name]
        # A push's rights (pull replication stores what it copies), the replication store,
        # the stream, its queue, and opening credentials.
        required = needed | replication | STREAM_READ | QUEUE_CONSUMER | {"sqs:SendMessage", "kms:Decrypt"}
        for action in sorted(actions - required):
            findings.append(f"{name}: {action} is not what the events function needs")
        for action in sorted(required - actions):
            findings.append(f"{name}: lacks {action}, which replication needs")
        if any(a.startswith("ssm:") for a in actions):
            findings.append(f"{name}: must not read the token keys")
        check_writes(name, resource, [REGISTRY_PARTITIONS | REPLICATION_PARTITIONS])
        check_decrypt(name, resource, {"kms:Decrypt"})
        check_queues(name, resource,
                     {"ReplicationQueue": QUEUE_CONSUMER | {"sqs:SendMessage"},
                      "ReplicationDeadLetterQueue": {"sqs:SendMessage"}})
        check_events_function(name, resource, template)
    for binary in ("registry-pull", "registry-push"):
        if binary in functions and any(a.startswith(("kms:", "sqs:")) for a in functions[binary][1]):
            findings.append(f"{functions[binary][0]}: must not decrypt anything nor use queues")


def check_decrypt(name, resource, replication_actions):
    """The token function decrypts with the token keys' KMS key only, through SSM only; it
    and the events function use the replication key (`replication_actions` on it) only with
    the credentials' encryption context."""
    for statement in statements(resource):
        action = statement.get("Action", [])
        actions = {action} if isinstance(action, str) else set(action)
        if not any(a.startswith("kms:") for a in actions):
            continue
        condition = statement.get("Condition", {})
        if statement.get("Resource") == {"Fn::GetAtt": ["ReplicationKmsKey", "Arn"]}:
            if actions != replication_actions or condition != {"StringEquals": CREDENTIAL_CONTEXT}:
                findings.append(
                    f"{name}: may only {sorted(replication_actions)} with ReplicationKmsKey under "
                    f"the encryption context {show(CREDENTIAL_CONTEXT)}, not {show(statement)}"
                )
            continue
        service = condition.get("StringEquals", {}).get("kms:ViaService")
        if name != "TokenFunction" or actions != {"kms:Decrypt"} \
                or statement.get("Resource") != {"Fn::GetAtt": ["TokenKeysKmsKey", "Arn"]} \
                or service != {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}:
            findings.append(
                f"{name}: may only kms:Decrypt with TokenKeysKmsKey through SSM, not {show(statement)}"
            )


def check_queues(name, resource, wanted):
    """A function's SQS actions, per queue, are exactly `wanted` ({queue: actions})."""
    granted = {}
    for statement in statements(resource):
        action = statement.get("Action", [])
        actions = {action} if isinstance(action, str) else set(action)
        if not any(a.startswith("sqs:") for a in actions):
            continue
        target = statement.get("Resource")
        queue = target.get("Fn::GetAtt", [None])[0] if isinstance(target, dict) else None
        if queue not in wanted or any(not a.startswith("sqs:") for a in actions):
            findings.append(f"{name}: SQS actions only on {sorted(wanted)}, not {show(statement)}")
            continue
        granted.setdefault(queue, set()).update(actions)
    for queue, actions in sorted(wanted.items()):
        if granted.get(queue, set()) != actions:
            findings.append(
                f"{name}: on {queue} needs exactly {sorted(actions)}, has {sorted(granted.get(queue, set()))}"
            )


def check_events_function(name, resource, template):
    """The events function's sources: the table's stream of manifests and tags with per-item
    failures and a dead-letter destination, one job per invocation from a queue whose
    visibility timeout covers six timeouts and that has a dead-letter queue, a schedule."""
    properties = resource.get("Properties", {})
    timeout = properties.get("Timeout")
    events = properties.get("Events", {})
    by_type = {}
    for event in events.values():
        by_type.setdefault(event.get("Type"), []).append(event.get("Properties", {}))
    streams = by_type.get("DynamoDB", [])
    if len(streams) != 1 or streams[0].get("Stream") != {"Fn::GetAtt": ["MetadataTable", "StreamArn"]}:
        findings.append(f"{name}: needs one DynamoDB event on MetadataTable's stream")
    else:
        stream = streams[0]
        if stream.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
            findings.append(f"{name}: its stream event must report batch item failures")
        if stream.get("BisectBatchOnFunctionError") is not True:
            findings.append(f"{name}: its stream event must bisect failed batches")
        on_failure = stream.get("DestinationConfig", {}).get("OnFailure", {})
        if on_failure.get("Destination") != {"Fn::GetAtt": ["ReplicationDeadLetterQueue", "Arn"]}:
            findings.append(f"{name}: failed stream batches must go to ReplicationDeadLetterQueue")
        if not isinstance(stream.get("MaximumRetryAttempts"), int):
            findings.append(f"{name}: its stream event must bound its retries")
    queues = by_type.get("SQS", [])
    if len(queues) != 1 or queues[0].get("Queue") != {"Fn::GetAtt": ["ReplicationQueue", "Arn"]}:
        findings.append(f"{name}: needs one SQS event on ReplicationQueue")
    elif queues[0].get("BatchSize") != 1 or queues[0].get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
        findings.append(f"{name}: takes one job per invocation and reports failed ones")
    if not by_type.get("Schedule") and not by_type.get("ScheduleV2"):
        findings.append(f"{name}: needs a schedule for scheduled policies")
    queue = template.get("Resources", {}).get("ReplicationQueue", {}).get("Properties", {})
    if not isinstance(timeout, int) or queue.get("VisibilityTimeout", 30) < 6 * timeout:
        findings.append(
            f"ReplicationQueue: VisibilityTimeout {queue.get('VisibilityTimeout', 30)} is under six "
            f"times {name}'s timeout {timeout}"
        )
    redrive = queue.get("RedrivePolicy", {})
    if redrive.get("deadLetterTargetArn") != {"Fn::GetAtt": ["ReplicationDeadLetterQueue", "Arn"]} \
            or not isinstance(redrive.get("maxReceiveCount"), int):
        findings.append("ReplicationQueue: needs a RedrivePolicy to ReplicationDeadLetterQueue")
    for queue_name in ("ReplicationQueue", "ReplicationDeadLetterQueue"):
        queue = template.get("Resources", {}).get(queue_name, {}).get("Properties", {})
        if queue.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in queue:
            findings.append(f"{queue_name}: must be encrypted at rest")


S3_ACTIONS = {"s3:GetObject", "s3:ListBucket"}
# The partitions of account items (shared/meta-dynamodb/src/schema.rs).
ACCOUNT_PARTITIONS = {"USER#*", "PROJECT#*", "LOGIN#*"}


def statements(resource):
    for policy in resource.get("Properties", {}).get("Policies", []):
        if isinstance(policy, dict):
            yield from policy.get("Statement", [])


def check_writes(name, resource, partition_sets):
    """Each of a function's DynamoDB write statements is limited, by a dynamodb:LeadingKeys
    condition, to exactly one of `partition_sets`."""
    for statement in statements(resource):
        action = statement.get("Action", [])
        actions = {action} if isinstance(action, str) else set(action)
        if not any(a.startswith("dynamodb:") and a.split(":")[1].startswith(("Put", "Update", "Delete", "BatchWrite"))
                   for a in actions):
            continue
        keys = (
            statement.get("Condition", {})
            .get("ForAllValues:StringLike", {})
            .get("dynamodb:LeadingKeys")
        )
        if set(keys or []) not in partition_sets:
            findings.append(
                f"{name}: its writes must be limited to the partitions "
                f"{' or '.join(str(sorted(p)) for p in partition_sets)} by a "
                f"dynamodb:LeadingKeys condition, not {show(keys)}"
            )


# The token keys' path, as the template computes it everywhere.
KEYS_PATH = {
    "Fn::If": [
        "HasTokenKeysPath",
        {"Ref": "TokenKeysPath"},
        {"Fn::Sub": "/berth/${AWS::StackName}/token-keys"},
    ]
}


def check_parameters(name, binary, resource):
    """Registry functions read the public token keys, the token function the private one."""
    want = {"token": "/private", "registry-pull": "/public", "registry-push": "/public"}.get(binary)
    for statement in statements(resource):
        action = statement.get("Action", [])
        actions = {action} if isinstance(action, str) else set(action)
        if not any(a.startswith("ssm:") for a in actions):
            continue
        target = statement.get("Resource")
        text = target.get("Fn::Sub") if isinstance(target, dict) else target
        # !Sub [text, {Path: <the keys path>}]
        if isinstance(text, list) and len(text) == 2 and isinstance(text[1], dict):
            path = text[1].get("Path")
            text = text[0] if path == KEYS_PATH else None
        if actions != {"ssm:GetParameter"} or not isinstance(text, str) or want is None \
                or not text.endswith(":parameter${Path}" + want):
            findings.append(
                f"{name}: may only read the parameter <token keys path>{want}, "
                f"not {show(actions)} on {show(target)}"
            )


template, matches = decode(TEMPLATE)
if matches or template is None:
    for match in matches:
        print(match, file=sys.stderr)
    sys.exit(1)
check_table(template)
check_iam(template)
for finding in findings:
    print(finding, file=sys.stderr)
if findings:
    sys.exit(1)
print("the metadata table and the functions' IAM actions agree with the code")
PY

if ((status != 0)); then
    echo "check-infra: FAILED" >&2
fi
exit "$status"
