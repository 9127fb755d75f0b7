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
# function use the replication KMS key, with its encryption context. The upload front
# (UploadFront=fargate) is checked the same way: its task role holds exactly what the
# Registry use cases it serves reach in the S3 and DynamoDB adapters, its table rights are
# limited to upload and repository partitions, and only it and the push function (with the
# front only) read the grant key <token keys path>/upload, decrypted through Parameter Store.
# Garbage collection: the registry's functions (and the front) claim blobs and count
# references (UpdateItem and PutItem in BLOB# and GCQ# partitions); the gc function holds
# exactly its reads, its stream, its writes in BLOB#, GCQ#, GC# and REPO# partitions and
# s3:DeleteObject on blobs, which no other function holds, one invocation at a time. Tag
# retention (meta-dynamodb retention.rs): the token function and the gc function hold exactly
# its writes, in RETENTION# partitions, and the gc function's stream also takes the running
# executions' items.
# The template is linted as it is and with UploadFront defaulting to fargate, and checked
# against the code for each value of UploadFront; with none, no front resource exists and the
# push function is what it was without one. Installs cfn-lint and the SAM CLI with pip when
# missing. Exits non-zero on any finding, warnings included.
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

# cfn-lint checks every combination of conditions, but resolves parameters to their
# defaults: the copy lints the template as an upload front deployment sees it.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fargate_template=$scratch/template-upload-front.yaml
sed -E '/^  UploadFront:$/,/^  [A-Za-z]/ s/^(    Default: )none$/\1fargate/' "$template" >"$fargate_template"
if ! grep -q '^    Default: fargate$' "$fargate_template"; then
    echo "check-infra: could not make UploadFront default to fargate in a copy of $template" >&2
    status=1
fi

for variant in "$template" "$fargate_template"; do
    echo "== cfn-lint $variant"
    cfn-lint --regions "$region" -- "$variant" || status=1

    echo "== sam validate --lint $variant"
    sam validate --lint --region "$region" --template-file "$variant" || status=1
done

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
# The audit log and counters (written by the events function, read by the token function),
# and webhook policies (the token function's).
DYNAMODB_RECORDS = [DYNAMODB_ADAPTER / "audit.rs", DYNAMODB_ADAPTER / "statistics.rs"]
DYNAMODB_WEBHOOKS = DYNAMODB_ADAPTER / "webhooks.rs"
# Tag retention's records (retention.rs): the token function's API starts and stops runs, the
# gc function carries them out.
DYNAMODB_RETENTION = DYNAMODB_ADAPTER / "retention.rs"
# Garbage collection's records (garbage.rs): the gc function's. What the registry's use cases
# do there (claim a blob, count and drop references) is GARBAGE_CLAIMS.
DYNAMODB_GARBAGE = DYNAMODB_ADAPTER / "garbage.rs"
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
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "query_all": {"dynamodb:Query"},
    "batch_get_items": {"dynamodb:BatchGetItem"},
    "batch_write": {"dynamodb:BatchWriteItem"},
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
REGISTRY_PARTITIONS = {"REPO#*", "UPLOAD#*", "BLOB#*", "GCQ#*"}
# A blob claimed before it is published or linked (its record updated, a candidate put) and
# the reference counts a manifest put or deletion changes (Updates and Puts of a transaction).
GARBAGE_CLAIMS = {"dynamodb:UpdateItem", "dynamodb:PutItem"}
# The gc function: reads, its stream, its writes and the blobs it deletes.
GC_WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
             "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem"}
GC_PARTITIONS = {"BLOB#*", "GCQ#*", "GC#*", "REPO#*", "QUOTA#*"}
GC_RUN_PARTITIONS = {"GC#*"}
RETENTION_PARTITIONS = {"RETENTION#*"}
# The repository and artifact API of the token function: tags added (put_manifest),
# artifacts, tags and repositories deleted (delete_manifest, delete_tag, delete_repository),
# in repository partitions only.
REPOSITORY_PARTITIONS = {"REPO#*", "BLOB#*", "GCQ#*", "QUOTA#*"}
# Project quotas (meta-dynamodb quota.rs): the charges and usage every manifest put or
# deletion changes, and the limits the token function sets.
QUOTA_PARTITIONS = {"QUOTA#*"}
# A completed upload is checked against its project's limit: the quota and one charge read.
QUOTA_READ = {"dynamodb:GetItem", "dynamodb:BatchGetItem"}
REPOSITORY_WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                     "dynamodb:BatchWriteItem"}
# The audit log's and the counters' partitions (meta-dynamodb audit.rs, statistics.rs), which
# the events function writes (artifact counters live in REPO# partitions).
AUDIT_PARTITIONS = {"AUDIT#*", "STATS#*", "COUNTED#*"}
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

# The parameter that turns the upload front on, and the application layer it serves through.
FRONT_PARAMETER = "UploadFront"
CORE = pathlib.Path("shared/core/src")
# The Registry use cases `berth upload-front` serves: PATCH, PUT, DELETE and GET of an upload
# session. Its task role holds what they reach in the adapters, and nothing more.
FRONT_USE_CASES = ("append_upload", "complete_upload", "cancel_upload", "upload_progress")
# The fields through which the Registry calls its ports, and the adapters implementing them.
PORT_FIELDS = {"blobs": ("BlobStore", "S3BlobStore"), "meta": ("MetadataStore", "DynamoMetadataStore")}
# The grant key is a SecureString: read with decryption (token_keys.rs).
GRANT_KEY_READ = {"ssm:GetParameter", "kms:Decrypt"}
# What ECS may do with the front's execution role: pull its image, write its logs.
TASK_START = {
    "ecr:GetAuthorizationToken",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}
# The environment the front shares with the functions (same bucket, table and keys).
FRONT_SHARED_ENVIRONMENT = (
    "BERTH_BLOB_STORE",
    "BERTH_METADATA",
    "BERTH_S3_PATH_STYLE",
    "BERTH_TOKEN_KEYS_SSM",
    "BERTH_LOG",
)
# The push function's settings that exist only with an upload front.
PUSH_FRONT_ENVIRONMENT = ("BERTH_UPLOAD_URL", "BERTH_UPLOAD_GRANT_LIFETIME")

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


def blank(text):
    """`text` with its comments, string and character literals blanked out (newlines kept,
    so offsets and lines stay), and its #[cfg(test)] modules: braces and calls are then
    those of the code."""
    out = list(text)
    size = len(text)

    def wipe(start, end):
        for k in range(start, end):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while i < size:
        raw = re.compile(r'b?r(#*)"').match(text, i)
        if raw and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + raw.group(1), raw.end())
            end = size if end < 0 else end + 1 + len(raw.group(1))
            wipe(i, end)
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = size if end < 0 else end
            wipe(i, end)
            i = end
        elif text.startswith("/*", i):
            depth, end = 1, i + 2
            while end < size and depth:
                if text.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif text.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
            wipe(i, end)
            i = end
        elif text[i] == '"':
            end = i + 1
            while end < size and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            wipe(i, end + 1)
            i = end + 1
        elif text[i] == "'" and i + 2 < size and (text[i + 1] == "\\" or text[i + 2] == "'"):
            # A character literal ('{', '\''); a lifetime ('a) has no closing quote there.
            end = text.find("'", i + 3) if text[i + 1] == "\\" else i + 2
            wipe(i, end + 1)
            i = end + 1
        else:
            i += 1
    code = "".join(out)
    for test in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", code):
        end = closing_brace(code, test.end() - 1)
        code = code[: test.start()] + re.sub(r"[^\n]", " ", code[test.start() : end + 1]) + code[end + 1 :]
    return code


def closing_brace(code, start):
    """The offset of the brace closing the one at `start`."""
    depth = 0
    for i in range(start, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(code) - 1


def rust_functions(location, excluded=frozenset()):
    """{(owner, name): [body]} of the functions at `location`: owner is the type of the impl
    block a method is in (the implementing type for a trait impl), None for a free
    function. Bodies are blanked (see `blank`)."""
    functions = {}
    for path, text in sources(location, excluded):
        code = blank(text)
        impls = []
        for item in re.finditer(r"^[ \t]*(?:unsafe\s+)?impl\b([^{;]*)\{", code, re.M):
            header = item.group(1)
            while re.search(r"<[^<>]*>", header):
                header = re.sub(r"<[^<>]*>", "", header)
            target = re.split(r"\bfor\b", re.split(r"\bwhere\b", header)[0])[-1]
            names = re.findall(r"[A-Za-z_]\w*", target)
            if names:
                impls.append((item.start(), closing_brace(code, item.end() - 1), names[-1]))
        for item in re.finditer(r"\bfn\s+([A-Za-z_]\w*)", code):
            depth, i = 0, item.end()
            while i < len(code) and not (depth == 0 and code[i] in "{;"):
                depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(code[i], 0)
                i += 1
            if i >= len(code) or code[i] == ";":
                continue
            owners = [owner for start, end, owner in impls if start < item.start() < end]
            owner = owners[-1] if owners else None
            body = code[i : closing_brace(code, i) + 1]
            functions.setdefault((owner, item.group(1)), []).append(body)
    return functions


def callees(functions, owner, body):
    """The functions of `functions` that `body` (of a function of `owner`) may call: its own
    type's methods through self or Self, a type's associated functions, free functions, and
    any method of that name for a call on another receiver."""
    found = set()
    for name in re.findall(r"\b(?:self|Self)\s*(?:\.|::)\s*([a-z_]\w*)\s*(?:::<[^>]*>)?\s*\(", body):
        found.add((owner, name))
    for kind, name in re.findall(r"\b([A-Z]\w*)\s*::\s*([a-z_]\w*)\s*\(", body):
        found.add((kind, name))
    for call in re.finditer(r"\.\s*([a-z_]\w*)\s*(?:::<[^>]*>)?\s*\(", body):
        before = body[: call.start()].rstrip()
        if not (before.endswith("self") and not re.match(r"\w", before[-5:-4] or " ")):
            found |= {key for key in functions if key[0] is not None and key[1] == call.group(1)}
    for name in re.findall(r"(?<![\w.:])([a-z_]\w*)\s*\(", body):
        found.add((None, name))
    for name in re.findall(r"\b[a-z_]\w*\s*::\s*([a-z_]\w*)\s*\(", body):
        found.add((None, name))
    return {key for key in found if key in functions}


def reached(functions, roots):
    """The bodies of `roots` and of everything they call, transitively."""
    seen, todo, bodies = set(), list(roots), []
    while todo:
        key = todo.pop()
        if key in seen or key not in functions:
            continue
        seen.add(key)
        for body in functions[key]:
            bodies.append(body)
            todo.extend(callees(functions, key[0], body))
    return bodies


def sdk_actions(where, bodies, operations, ignored=frozenset()):
    """The IAM actions of the SDK calls `client.<operation>(` in `bodies`."""
    needed = set()
    for body in bodies:
        for operation in re.findall(r"\bclient\s*\.\s*([a-z0-9_]+)\s*\(", body):
            if operation in ignored:
                continue
            if operation not in operations:
                findings.append(
                    f"{where}: unmapped SDK call client.{operation}(): add it to "
                    "scripts/check-infra.sh and its IAM actions to the template"
                )
                continue
            needed |= operations[operation]
    return needed


def front_actions():
    """The S3 and DynamoDB actions of the upload front: what FRONT_USE_CASES reach through
    the Registry's ports in the S3 and DynamoDB adapters."""
    core = rust_functions(CORE)
    roots = [("Registry", use_case) for use_case in FRONT_USE_CASES]
    for root in roots:
        if root not in core:
            findings.append(f"{CORE}: no Registry::{root[1]}, which the upload front serves")
    ports = {field: set() for field in PORT_FIELDS}
    for body in reached(core, roots):
        for field, method in re.findall(r"\bself\s*\.\s*(\w+)\s*\.\s*([a-z_]\w*)\s*\(", body):
            if field in ports:
                ports[field].add(method)
    s3 = rust_functions(S3_ADAPTER)
    excluded = {DYNAMODB_ACCOUNTS, DYNAMODB_REPLICATION, DYNAMODB_STREAM, DYNAMODB_WEBHOOKS,
                DYNAMODB_GARBAGE, DYNAMODB_RETENTION, *DYNAMODB_RECORDS}
    dynamodb = rust_functions(DYNAMODB_ADAPTER, excluded)
    needed = set()
    for field, (functions, operations, ignored) in {
        "blobs": (s3, S3_OPERATIONS, CLIENT_ACCESSORS),
        "meta": (dynamodb, DYNAMODB_OPERATIONS, CLIENT_ACCESSORS | DYNAMODB_ADMINISTRATION),
    }.items():
        port, adapter = PORT_FIELDS[field]
        roots = [(adapter, method) for method in sorted(ports[field])]
        for root in roots:
            if root not in functions:
                findings.append(f"{adapter}: no {port}::{root[1]}, which the upload front calls")
        bodies = reached(functions, roots)
        needed |= sdk_actions(adapter, bodies, operations, ignored)
        if field == "meta":
            for body in bodies:
                for item in re.findall(r"\b([A-Z][A-Za-z]*)::builder\s*\(", body):
                    needed |= DYNAMODB_TRANSACTION_ITEMS.get(item, set())
                for item in re.findall(r"TransactWriteItem::builder\(\)\s*\.\s*([a-z_]+)\(", body):
                    needed |= DYNAMODB_TRANSACTION_ITEMS.get(item.capitalize(), set())
    return needed | GARBAGE_CLAIMS


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


def code_actions():
    """The IAM actions the code needs, by caller: the registry's adapters (`needed`), the
    account and replication stores, the replication carriers and the upload front."""
    s3 = calls(S3_ADAPTER, S3_OPERATIONS, CLIENT_ACCESSORS)
    ignored = CLIENT_ACCESSORS | DYNAMODB_ADMINISTRATION
    excluded = {DYNAMODB_ACCOUNTS, DYNAMODB_REPLICATION, DYNAMODB_STREAM, DYNAMODB_WEBHOOKS,
                DYNAMODB_GARBAGE, DYNAMODB_RETENTION, *DYNAMODB_RECORDS}
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
    needed = s3 | dynamodb | GARBAGE_CLAIMS
    # The replication store calls the SDK directly and through the table helpers.
    replication = calls(DYNAMODB_REPLICATION, DYNAMODB_OPERATIONS, ignored)
    replication_text = DYNAMODB_REPLICATION.read_text()
    for helper in re.findall(r"\.\s*([a-z_]+)\s*\(", replication_text):
        replication |= STORE_HELPERS.get(helper, set())
    if re.search(r"::builder\s*\(", replication_text) and "transact" in replication_text:
        findings.append(f"{DYNAMODB_REPLICATION}: map its transactions in scripts/check-infra.sh")
    carriers = calls(AWS_REPLICATION, AWS_REPLICATION_OPERATIONS, CLIENT_ACCESSORS)

    def store_actions(path):
        """The actions one store file needs: its SDK calls, the items of its transactions and
        batches, and the table helpers it calls."""
        found = calls(path, DYNAMODB_OPERATIONS, ignored)
        text = path.read_text()
        for item in re.findall(r"\b([A-Z][A-Za-z]*)::builder\s*\(", text):
            found |= DYNAMODB_TRANSACTION_ITEMS.get(item, set())
            found |= {"PutRequest": {"dynamodb:BatchWriteItem"},
                      "DeleteRequest": {"dynamodb:BatchWriteItem"}}.get(item, set())
        # Items of a transaction built with the table helpers (`.put(self.put(...))`).
        for item in re.findall(r"TransactWriteItem::builder\(\)\s*\.\s*([a-z_]+)\(", text):
            found |= DYNAMODB_TRANSACTION_ITEMS.get(item.capitalize(), set())
        for helper in re.findall(r"\.\s*([a-z_]+)\s*\(", text):
            found |= STORE_HELPERS.get(helper, set())
        return found

    records = set().union(*(store_actions(path) for path in DYNAMODB_RECORDS))
    webhooks = store_actions(DYNAMODB_WEBHOOKS)
    garbage = store_actions(DYNAMODB_GARBAGE)
    for action in sorted(garbage - READ_ONLY - GC_WRITES):
        findings.append(f"{DYNAMODB_GARBAGE}: {action} is not among the gc function's rights")
    retention = store_actions(DYNAMODB_RETENTION)
    for action in sorted(retention - READ_ONLY - GC_WRITES):
        findings.append(f"{DYNAMODB_RETENTION}: {action} is not among the gc function's rights")
    return {
        "garbage": garbage,
        "retention": retention,
        "records": records,
        "webhooks": webhooks,
        "needed": needed,
        "accounts": accounts,
        "replication": replication,
        "carriers": carriers,
        "front": front_actions(),
    }


def check_action_names(name, actions):
    known = load_resource(AdditionalSpecs, "Policies.json")
    for action in sorted(actions):
        service, _, verb = action.partition(":")
        if verb.lower() not in known.get(service, {}).get("Actions", {}):
            findings.append(f"{name}: {action} is not an IAM action")


def check_iam(template, code, front):
    """The functions' IAM actions against the code, with the upload front on or off."""
    needed, accounts = code["needed"], code["accounts"]
    replication, carriers = code["replication"], code["carriers"]
    records, webhooks = code["records"], code["webhooks"]
    retention = code["retention"]
    functions = {}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        actions = allowed_actions(name, resource)
        check_action_names(name, actions)
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        functions[binary] = (name, actions)
        check_parameters(name, binary, resource, front)

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
        resource = template["Resources"][name]
        # With an upload front it signs grants with the grant key (check_decrypt).
        grants = {"kms:Decrypt"} if front else set()
        for action in sorted(needed - actions):
            findings.append(f"{name}: lacks {action}, which the adapters need")
        for action in sorted(actions - needed - grants):
            findings.append(f"{name}: {action} is not used by the adapters")
        for action in sorted(grants - actions):
            findings.append(f"{name}: lacks {action}, to read the upload grant key")
        check_decrypt(name, resource, set(), {name} if front else set())
        check_push_environment(name, resource, front)
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
            | webhooks
            | retention
            | api
            | REPOSITORY_WRITES
            | {"ssm:GetParameter", "kms:Decrypt"}
        )
        for action in sorted(actions - allowed):
            findings.append(f"{name}: {action} is not what the token function needs")
        for action in sorted((accounts | webhooks | {"ssm:GetParameter"}) - actions):
            findings.append(f"{name}: lacks {action}, which the account and webhook adapters need")
        for action in sorted(api - actions):
            findings.append(f"{name}: lacks {action}, which the replication API needs")
        for action in sorted(retention - actions):
            findings.append(f"{name}: lacks {action}, which the retention API needs")
        for action in sorted(REPOSITORY_WRITES - actions):
            findings.append(f"{name}: lacks {action}, which the repository API needs")
        check_writes(name, template["Resources"][name],
                     [ACCOUNT_PARTITIONS | WEBHOOK_PARTITIONS, REPLICATION_PARTITIONS,
                      REPOSITORY_PARTITIONS, GC_RUN_PARTITIONS, RETENTION_PARTITIONS])
        check_decrypt(name, template["Resources"][name], {"kms:Encrypt", "kms:Decrypt"}, {name})
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
        required = (needed | replication | records | STREAM_READ | QUEUE_CONSUMER
                    | {"sqs:SendMessage", "kms:Decrypt"})
        for action in sorted(actions - required):
            findings.append(f"{name}: {action} is not what the events function needs")
        for action in sorted(required - actions):
            findings.append(f"{name}: lacks {action}, which replication needs")
        if any(a.startswith("ssm:") for a in actions):
            findings.append(f"{name}: must not read the token keys")
        check_writes(name, resource, [REGISTRY_PARTITIONS | REPLICATION_PARTITIONS | AUDIT_PARTITIONS
                                      | WEBHOOK_PARTITIONS | QUOTA_PARTITIONS])
        check_decrypt(name, resource, {"kms:Decrypt"}, set())
        check_event_lines(template, front)
        check_queues(name, resource,
                     {"ReplicationQueue": QUEUE_CONSUMER | {"sqs:SendMessage"},
                      "ReplicationDeadLetterQueue": {"sqs:SendMessage"}})
        check_events_function(name, resource, template)
    check_gc_function(template, functions, retention)
    for binary in ("registry-pull", "registry-push"):
        grants = {"kms:Decrypt"} if front and binary == "registry-push" else set()
        if binary in functions and any(
            a.startswith(("kms:", "sqs:")) and a not in grants for a in functions[binary][1]
        ):
            findings.append(f"{functions[binary][0]}: must not decrypt anything nor use queues")
    check_front(template, code["front"], front)


def check_gc_function(template, functions, retention):
    """The gc function: exactly reads, its stream, its writes (limited to its partitions, and
    tag retention's) and the deletion of blobs, which no other function holds; one invocation
    at a time; invoked by a schedule and by the run records of the table's stream (garbage
    collection's and the running retention executions')."""
    if "gc" not in functions:
        findings.append(f"{TEMPLATE}: no function builds the binary gc")
        return
    name, actions = functions["gc"]
    resource = template["Resources"][name]
    wanted = (READ_ONLY - {"dynamodb:Scan"} - S3_ACTIONS) | STREAM_READ | GC_WRITES | {"s3:DeleteObject"}
    for action in sorted(actions - wanted):
        findings.append(f"{name}: {action} is not what the gc function needs")
    for action in sorted(wanted - actions - {"s3:GetObject", "s3:ListBucket"}):
        findings.append(f"{name}: lacks {action}, which garbage collection needs")
    for action in sorted(retention - actions):
        findings.append(f"{name}: lacks {action}, which tag retention needs")
    check_writes(name, resource, [GC_PARTITIONS, RETENTION_PARTITIONS])
    for other, (other_name, other_actions) in functions.items():
        if other == "gc":
            continue
        for statement in statements(template["Resources"][other_name]):
            action = statement.get("Action", [])
            if "s3:DeleteObject" in ({action} if isinstance(action, str) else set(action)) and \
                    "blobs/" in json.dumps(statement.get("Resource")):
                findings.append(f"{other_name}: only the gc function deletes blobs")
    properties = resource.get("Properties", {})
    if properties.get("ReservedConcurrentExecutions") != 1:
        findings.append(f"{name}: must run one invocation at a time (ReservedConcurrentExecutions: 1)")
    kinds = sorted(event.get("Type") for event in properties.get("Events", {}).values())
    if kinds != ["DynamoDB", "Schedule"]:
        findings.append(f"{name}: wants a schedule and the table's stream, has {kinds}")
    for event in properties.get("Events", {}).values():
        filters = json.dumps(event.get("Properties", {}).get("FilterCriteria"))
        if event.get("Type") == "DynamoDB" and not ("GC#RUNS" in filters and "RETENTION#ROOT" in filters):
            findings.append(f"{name}: its stream must be filtered to the GC#RUNS run records and "
                            "the running retention executions (RETENTION#ROOT, RUNNING#)")


def check_decrypt(name, resource, replication_actions, key_readers):
    """`key_readers` (the token function; the push function and the front's task role with an
    upload front) decrypt with the token keys' KMS key only, through SSM only; the token and
    events functions use the replication key (`replication_actions` on it) only with the
    credentials' encryption context."""
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
        if name not in key_readers or actions != {"kms:Decrypt"} \
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
# Webhook deliveries, which the events function records and the token function deletes with
# their policy.
WEBHOOK_PARTITIONS = {"HOOKS#*"}


def statements(resource):
    """The statements of a function's policies, or of a role's inline policies."""
    for policy in resource.get("Properties", {}).get("Policies", []):
        if isinstance(policy, dict):
            yield from policy.get("PolicyDocument", policy).get("Statement", [])


def statement_actions(statement):
    action = statement.get("Action", [])
    return {action} if isinstance(action, str) else set(action)


def role_actions(name, resource):
    """Every action a role's statements grant, each checked to be an IAM action."""
    granted = set()
    for statement in statements(resource):
        granted |= statement_actions(statement)
    check_action_names(name, granted)
    return granted


def check_event_lines(template, front):
    """Every function's log group, and the upload front's, sends its event lines to the events
    function, which CloudWatch Logs may invoke for those groups only."""
    resources = template["Resources"]
    filters = {
        body["Properties"].get("LogGroupName", {}).get("Ref"): body
        for body in resources.values()
        if body.get("Type") == "AWS::Logs::SubscriptionFilter"
    }
    allowed = {
        body["Properties"].get("SourceArn", {}).get("Fn::GetAtt", [None])[0]
        for body in resources.values()
        if body.get("Type") == "AWS::Lambda::Permission"
        and body["Properties"].get("Principal") == "logs.amazonaws.com"
    }
    groups = ["RegistryPullLogGroup", "RegistryPushLogGroup", "TokenLogGroup", "GcLogGroup"]
    if front:
        groups.append("UploadFrontLogGroup")
    for group in groups:
        subscription = filters.get(group)
        if subscription is None:
            findings.append(f"{group}: no subscription filter sends its event lines to the events function")
            continue
        properties = subscription["Properties"]
        if properties.get("DestinationArn") != {"Fn::GetAtt": ["EventsFunction", "Arn"]}:
            findings.append(f"{group}: its subscription filter must deliver to the events function")
        if "berth::event" not in properties.get("FilterPattern", ""):
            findings.append(f"{group}: its subscription filter must select the berth::event lines only")
        if group not in allowed:
            findings.append(f"{group}: CloudWatch Logs has no permission to invoke the events function for it")


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


def check_parameters(name, binary, resource, front):
    """Registry functions read the public token keys, the token function the private one, the
    upload front the grant key; with an upload front, the push function reads the grant key
    too. `binary` is "upload-front" for the front's task role."""
    allowed = {
        "token": {"/private"},
        "registry-pull": {"/public"},
        "registry-push": {"/public", "/upload"} if front else {"/public"},
        "upload-front": {"/upload"},
    }.get(binary, set())
    required = {"/upload"} if binary == "upload-front" or (front and binary == "registry-push") else set()
    read = set()
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
        parameter = re.fullmatch(r"arn:\$\{AWS::Partition\}:ssm:\$\{AWS::Region\}:"
                                 r"\$\{AWS::AccountId\}:parameter\$\{Path\}(/\w+)", text or "")
        if actions != {"ssm:GetParameter"} or not parameter or parameter.group(1) not in allowed:
            findings.append(
                f"{name}: may only read the parameters <token keys path>{sorted(allowed)}, "
                f"not {show(actions)} on {show(target)}"
            )
            continue
        read.add(parameter.group(1))
    for suffix in sorted(required - read):
        findings.append(f"{name}: must read the parameter <token keys path>{suffix}")


def check_push_environment(name, resource, front):
    """The push function knows the upload front (and its grants' lifetime) only with one."""
    variables = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
    for variable in PUSH_FRONT_ENVIRONMENT:
        if front and variable not in variables:
            findings.append(f"{name}: needs {variable} with an upload front")
        if not front and variable in variables:
            findings.append(f"{name}: must not have {variable} without an upload front")


FRONT_TYPES = ("AWS::ECS::", "AWS::ElasticLoadBalancingV2::", "AWS::ApplicationAutoScaling::",
               "AWS::EC2::", "AWS::IAM::")


def check_front(template, actions, front):
    """The upload front: its task role holds exactly `actions` (what its use cases reach in
    the adapters) and the grant key's reading, its table rights stay in upload and repository
    partitions, its execution role only starts tasks, its container shares the functions'
    storage and keys and answers the load balancer's health checks. Without it, none of its
    resources exists."""
    resources = template.get("Resources", {})
    if not front:
        for name, resource in resources.items():
            if name.startswith("UploadFront") or resource.get("Type", "").startswith(FRONT_TYPES):
                findings.append(f"{name}: exists with {FRONT_PARAMETER}=none")
        return
    tasks = [(n, r) for n, r in resources.items() if r.get("Type") == "AWS::ECS::TaskDefinition"]
    if len(tasks) != 1:
        findings.append(f"{TEMPLATE}: needs one ECS task definition for the upload front, has {len(tasks)}")
        return
    task_name, task = tasks[0]
    properties = task.get("Properties", {})
    roles = {}
    for key in ("TaskRoleArn", "ExecutionRoleArn"):
        ref = properties.get(key)
        role = ref.get("Fn::GetAtt", [None])[0] if isinstance(ref, dict) else None
        if resources.get(role, {}).get("Type") != "AWS::IAM::Role":
            findings.append(f"{task_name}: {key} must be a role of the template, not {show(ref)}")
            return
        roles[key] = role
    if roles["TaskRoleArn"] == roles["ExecutionRoleArn"]:
        findings.append(f"{task_name}: the task and execution roles must differ")
    for key, role in roles.items():
        if resources[role]["Properties"].get("ManagedPolicyArns"):
            findings.append(f"{role}: write its policies out as statements, not managed policies")

    role = roles["TaskRoleArn"]
    granted = role_actions(role, resources[role])
    required = actions | GRANT_KEY_READ | QUOTA_READ
    for action in sorted(granted - required):
        findings.append(f"{role}: {action} is not used by the upload front")
    for action in sorted(required - granted):
        findings.append(f"{role}: lacks {action}, which the upload front needs")
    check_parameters(role, "upload-front", resources[role], front)
    check_decrypt(role, resources[role], set(), {role})
    written = set()
    for statement in statements(resources[role]):
        found = statement_actions(statement)
        if any(a.startswith("dynamodb:") for a in found):
            keys = (statement.get("Condition", {}).get("ForAllValues:StringLike", {})
                    .get("dynamodb:LeadingKeys"))
            if not keys or not set(keys) <= REGISTRY_PARTITIONS | QUOTA_PARTITIONS:
                findings.append(
                    f"{role}: its table rights must be limited to the partitions "
                    f"{sorted(REGISTRY_PARTITIONS | QUOTA_PARTITIONS)} by a dynamodb:LeadingKeys "
                    f"condition, not {show(keys)}"
                )
            elif set(keys) == QUOTA_PARTITIONS and found - QUOTA_READ:
                findings.append(f"{role}: may only read quotas, not {sorted(found - QUOTA_READ)}")
            elif "dynamodb:PutItem" in found:
                written |= set(keys)
        if "s3:DeleteObject" in found and statement.get("Resource") != {"Fn::Sub": "${BlobBucket.Arn}/uploads/*"}:
            findings.append(f"{role}: may delete staged uploads only, not {show(statement.get('Resource'))}")
    # Sessions live in UPLOAD# partitions, the blob links a completion writes in REPO# ones.
    if "dynamodb:PutItem" in actions and written != REGISTRY_PARTITIONS:
        findings.append(f"{role}: must write the partitions {sorted(REGISTRY_PARTITIONS)}, writes {sorted(written)}")

    execution = roles["ExecutionRoleArn"]
    started = role_actions(execution, resources[execution])
    for action in sorted(started - TASK_START):
        findings.append(f"{execution}: {action} is not needed to start a task")

    containers = properties.get("ContainerDefinitions", [])
    if len(containers) != 1:
        findings.append(f"{task_name}: needs one container, the upload front")
        return
    container = containers[0]
    environment = {e.get("Name"): e.get("Value") for e in container.get("Environment", [])}
    shared = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    for variable in FRONT_SHARED_ENVIRONMENT:
        if environment.get(variable) != shared.get(variable):
            findings.append(
                f"{task_name}: {variable} is {show(environment.get(variable))}, "
                f"the functions have {show(shared.get(variable))}"
            )
    ports = [m.get("ContainerPort") for m in container.get("PortMappings", [])]
    listen = str(environment.get("BERTH_LISTEN", "0.0.0.0:8080")).rpartition(":")[2]
    groups = [r for r in resources.values() if r.get("Type") == "AWS::ElasticLoadBalancingV2::TargetGroup"]
    if ports != [int(listen)] or len(groups) != 1 \
            or groups[0]["Properties"].get("Port") != int(listen) \
            or groups[0]["Properties"].get("HealthCheckPath") != "/health":
        findings.append(
            f"{task_name}: the container must listen on its one port (BERTH_LISTEN), which the "
            "target group forwards to and health-checks at /health"
        )
    # The image is built for the machine that builds it: the architecture is a parameter.
    if properties.get("RuntimePlatform", {}).get("CpuArchitecture") != {"Ref": "UploadFrontArchitecture"}:
        findings.append(f"{task_name}: runs on the UploadFrontArchitecture its image was built for")


def front_values(template):
    """The values of FRONT_PARAMETER, each with whether the upload front is on, and what the
    conditions depending on it evaluate to."""
    parameter = template.get("Parameters", {}).get(FRONT_PARAMETER)
    if parameter is None:
        findings.append(f"{TEMPLATE}: no parameter {FRONT_PARAMETER}")
        return []
    conditions = template.get("Conditions", {})

    def evaluate(node, value):
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Ref":
                return value if argument == FRONT_PARAMETER else None
            if function == "Condition":
                return evaluate(conditions.get(argument), value)
            if function in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
                args = [evaluate(a, value) for a in argument]
                if any(a is None for a in args):
                    return None
                return {
                    "Fn::Equals": lambda: args[0] == args[1],
                    "Fn::Not": lambda: not args[0],
                    "Fn::And": lambda: all(args),
                    "Fn::Or": lambda: any(args),
                }[function]()
            return None
        return node if isinstance(node, (str, bool)) else None

    values = []
    for value in parameter.get("AllowedValues", []):
        truth = {name: evaluate(node, value) for name, node in conditions.items()}
        values.append((value, value != "none", {k: v for k, v in truth.items() if v is not None}))
    if [v for v, _, _ in values][:1] != ["none"] or parameter.get("Default") != "none":
        findings.append(f"{FRONT_PARAMETER}: none must be its first value and its default")
    return values


NO_VALUE = object()


def resolve(node, truth):
    """`node` as CloudFormation makes it when the conditions in `truth` have those values:
    Fn::If on them resolved, AWS::NoValue and resources or outputs of false conditions gone."""
    if isinstance(node, dict):
        if len(node) == 1 and "Fn::If" in node and node["Fn::If"][0] in truth:
            name, then, otherwise = node["Fn::If"]
            chosen = then if truth[name] else otherwise
            return NO_VALUE if chosen == {"Ref": "AWS::NoValue"} else resolve(chosen, truth)
        resolved = {}
        for key, value in node.items():
            condition = value.get("Condition") if isinstance(value, dict) else None
            if isinstance(condition, str) and truth.get(condition) is False:
                continue
            value = resolve(value, truth)
            if value is not NO_VALUE:
                resolved[key] = value
        return resolved
    if isinstance(node, list):
        return [v for v in (resolve(v, truth) for v in node) if v is not NO_VALUE]
    return node


template, matches = decode(TEMPLATE)
if matches or template is None:
    for match in matches:
        print(match, file=sys.stderr)
    sys.exit(1)
check_table(template)
code = code_actions()
for value, front, truth in front_values(template):
    before = len(findings)
    check_iam(resolve(template, truth), code, front)
    findings[before:] = [f"{FRONT_PARAMETER}={value}: {finding}" for finding in findings[before:]]
for finding in dict.fromkeys(findings):
    print(finding, file=sys.stderr)
if findings:
    sys.exit(1)
print(
    "the metadata table and the IAM actions of the functions and of the upload front agree "
    f"with the code (the front's S3 and DynamoDB actions: {', '.join(sorted(code['front']))})"
)
PY

if ((status != 0)); then
    echo "check-infra: FAILED" >&2
fi
exit "$status"
