//! The JSON Schema (draft-07) of weir's pipeline file format, version 1, as documented in
//! docs/pipeline-format.md. `weir schema` prints it so that yaml-language-server and other
//! editors can complete and check pipeline files. This module owns the schema and the field
//! lists it declares for each kind of object; it is pure (no I/O). The schema checks shapes
//! only: cross-references (`needs`, templates, `register.file`, docker needing an image) are
//! left to the validator.

use serde_json::{Map, Value, json};

/// Keys of the top level of a pipeline file (besides the ignored `x-` keys).
pub const TOP_LEVEL_FIELDS: &[&str] =
    &["version", "name", "description", "params", "defaults", "schedule", "keep", "sla", "notify", "on", "steps"];

/// Keys of `on`: the trigger kinds.
pub const ON_FIELDS: &[&str] = &["files", "pipeline", "webhook"];
/// Keys of a `files` trigger.
pub const FILES_TRIGGER_FIELDS: &[&str] = &["path", "glob", "settle"];
/// Keys of a `pipeline` trigger.
pub const PIPELINE_TRIGGER_FIELDS: &[&str] = &["name", "when", "params"];
/// Keys of the `webhook` trigger.
pub const WEBHOOK_TRIGGER_FIELDS: &[&str] = &["params"];

/// Keys of a `notify` entry.
pub const NOTIFY_FIELDS: &[&str] = &["on", "webhook", "slack", "secret"];

/// Keys of `keep`.
pub const KEEP_FIELDS: &[&str] = &["runs", "days"];

/// Keys of a step, in the order of the format reference.
pub const STEP_FIELDS: &[&str] = &[
    "stage",
    "needs",
    "run",
    "command",
    "env",
    "outputs",
    "matrix",
    "cache",
    "resources",
    "runtime",
    "image",
    "pull",
    "capabilities",
    "retries",
    "timeout",
    "when",
    "gate",
    "register",
    "approval",
    "runs_on",
    "notify",
    "secrets",
];

/// Keys of `defaults`: the step fields that can be set for every step at once.
pub const DEFAULTS_FIELDS: &[&str] =
    &["runtime", "image", "pull", "capabilities", "retries", "timeout", "resources", "runs_on", "env", "cache"];

/// Keys of a param declared in its map form.
pub const PARAM_FIELDS: &[&str] = &["type", "default", "description", "enum", "min", "max", "pattern"];

/// Keys of `schedule`.
pub const SCHEDULE_FIELDS: &[&str] = &["cron", "timezone", "catchup", "max_catchup", "concurrency", "params"];

/// Keys of `retries` in its map form.
pub const RETRY_FIELDS: &[&str] = &["limit", "backoff", "max_backoff"];

/// Keys of `resources`.
pub const RESOURCE_FIELDS: &[&str] = &["cpus", "memory", "gpus"];

/// Keys of `register`.
pub const REGISTER_FIELDS: &[&str] = &["model", "file", "alias", "when", "approval"];

/// Keys of `register.approval`.
pub const ALIAS_APPROVAL_FIELDS: &[&str] = &["message", "timeout"];

/// Keys of `approval`.
pub const APPROVAL_FIELDS: &[&str] = &["message", "timeout"];

/// Keys of `cache` in its map form.
pub const CACHE_FIELDS: &[&str] = &["ttl"];

/// Pipeline and step names.
const NAME_PATTERN: &str = "^[a-z0-9_-]{1,63}$";
/// Param names and environment variable names.
const IDENTIFIER_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// One or more `<number><unit>`.
const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";
/// A memory quantity with an optional binary or decimal suffix (bytes without one).
const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T|k)?$";
/// Millicores, at least `1m` (cpus must be > 0).
const MILLICORES_PATTERN: &str = "^0*[1-9][0-9]*m$";
/// Five cron fields, six with seconds first, or one of the `@` shorthands.
const CRON_PATTERN: &str = r"^(@(hourly|daily|weekly|monthly|yearly|annually)|[^\s]+(\s+[^\s]+){4,5})$";
/// A `..` path segment, which an output path must not contain.
const PARENT_SEGMENT_PATTERN: &str = r"(^|/)\.\.(/|$)";

/// The JSON Schema of a pipeline file, version 1.
pub fn json_schema() -> Value {
    extended(
        closed_object(
            "A weir pipeline file, format version 1: a DAG of steps.",
            TOP_LEVEL_FIELDS,
            top_level_properties(),
        ),
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "https://weir.dev/schema/pipeline-v1.json",
            "title": "weir pipeline",
            "required": ["name", "steps"],
            "patternProperties": {
                "^x-": {"description": "Ignored by weir; a home for YAML anchors."},
            },
            "definitions": definitions(),
        }),
    )
}

/// Shared pieces, referenced as `#/definitions/<name>`.
fn definitions() -> Value {
    let steps = step_properties();
    let defaults: Map<String, Value> =
        DEFAULTS_FIELDS.iter().map(|&field| (field.to_string(), steps[field].clone())).collect();
    json!({
        "name": {
            "description": "A name: `[a-z0-9_-]`, 1 to 63 characters.",
            "type": "string",
            "pattern": NAME_PATTERN,
        },
        "paramName": {
            "description": "A param name: `[A-Za-z_][A-Za-z0-9_]*`.",
            "type": "string",
            "pattern": IDENTIFIER_PATTERN,
        },
        "envName": {
            "description": "An environment variable name; `WEIR_` names are reserved.",
            "type": "string",
            "allOf": [{"pattern": IDENTIFIER_PATTERN}, {"not": {"pattern": "^WEIR_"}}],
        },
        "scalar": {
            "description": "A string, number or boolean.",
            "type": ["string", "number", "boolean"],
        },
        "duration": {
            "description": "One or more `<number><unit>`, units ms, s, m, h, d: `90s`, `1h30m`.",
            "type": "string",
            "pattern": DURATION_PATTERN,
        },
        "quantity": {
            "description": "A memory quantity: `512Mi`, `2Gi`, `1G`, or bytes.",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": QUANTITY_PATTERN},
            ],
        },
        "cpus": {
            "description": "A number of CPUs > 0, or millicores such as `500m`.",
            "oneOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": MILLICORES_PATTERN},
            ],
        },
        "relativePath": {
            "description": "A relative path (`dir/` for a folder); no `..` segment.",
            "type": "string",
            "pattern": "^[^/]",
            "not": {"pattern": PARENT_SEGMENT_PATTERN},
        },
        "stringMap": {
            "description": "A map of strings (numbers and booleans are taken as their text).",
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "param": {
            "description": "A run parameter: a shorthand default value, or its declaration.",
            "oneOf": [
                {
                    "description": "Shorthand: the default; an integer makes an int param, \
                        a decimal a float, true/false a bool, anything else a string.",
                    "type": ["string", "number", "boolean"],
                },
                extended(
                    closed_object(
                        "A param declaration; without `default` it is required at run time.",
                        PARAM_FIELDS,
                        param_properties(),
                    ),
                    json!({"allOf": param_type_rules()}),
                ),
            ],
        },
        "keep": extended(
            closed_object("Which finished runs retention keeps.", KEEP_FIELDS, json!({
                "runs": {
                    "description": "Keep at most this many finished runs, the newest.",
                    "type": "integer", "minimum": 1, "maximum": 1_000_000,
                },
                "days": {
                    "description": "Keep finished runs for this many days after they finished.",
                    "type": "integer", "minimum": 1, "maximum": 1_000_000,
                },
            })),
            json!({"minProperties": 1}),
        ),
        "notify": {
            "description": "Where to send notifications, and for which events.",
            "type": "array",
            "maxItems": 32,
            "items": extended(
                closed_object("One receiver and the events it gets.", NOTIFY_FIELDS, json!({
                    "on": {
                        "description": "The events; in a step only its own (step_failed, gate_refused, \
                            model_promoted, model_refused, approval_requested).",
                        "type": "array", "minItems": 1,
                        "items": {"enum": crate::spec::NotifyOn::ALL.map(|e| e.name())},
                    },
                    "webhook": {
                        "description": "An http:// URL that gets weir's JSON payload (https awaits a TLS client).",
                        "type": "string", "pattern": "^http://",
                    },
                    "slack": {
                        "description": "An http:// Slack-compatible incoming-webhook URL (`{\"text\": ...}`).",
                        "type": "string", "pattern": "^http://",
                    },
                    "secret": {
                        "description": "The name of a secret in the engine's --notify-secrets file that \
                            signs webhook deliveries (HMAC-SHA256).",
                        "$ref": "#/definitions/name",
                    },
                })),
                json!({"required": ["on"], "oneOf": [{"required": ["webhook"]}, {"required": ["slack"]}]}),
            ),
        },
        "on": extended(
            closed_object(
                "Triggers beside the schedule; each of `files` and `pipeline` is one trigger or a list \
                    of up to 32. docs/triggers.md has the details.",
                ON_FIELDS,
                json!({
                    "files": {
                        "description": "New or changed files in a folder on the engine's host: one run each.",
                        "oneOf": [
                            {"$ref": "#/definitions/filesTrigger"},
                            {"type": "array", "minItems": 1, "maxItems": 32, "items": {"$ref": "#/definitions/filesTrigger"}},
                        ],
                    },
                    "pipeline": {
                        "description": "Another pipeline's successful runs: one run each that meets `when`.",
                        "oneOf": [
                            {"$ref": "#/definitions/pipelineTrigger"},
                            {"type": "array", "minItems": 1, "maxItems": 32, "items": {"$ref": "#/definitions/pipelineTrigger"}},
                        ],
                    },
                    "webhook": {
                        "description": "A signed POST to /hooks/PIPELINE (one per pipeline).",
                        "$ref": "#/definitions/webhookTrigger",
                    },
                }),
            ),
            json!({"minProperties": 1}),
        ),
        "filesTrigger": extended(
            closed_object("A folder watched for new data.", FILES_TRIGGER_FIELDS, json!({
                "path": {"description": "An absolute folder on the engine's host.", "type": "string", "pattern": "^/"},
                "glob": {"description": "Which file names count (default `*`).", "type": "string"},
                "settle": {
                    "description": "How long a file must stay unchanged before it is taken (default 30s).",
                    "$ref": "#/definitions/duration",
                },
            })),
            json!({"required": ["path"]}),
        ),
        "pipelineTrigger": extended(
            closed_object("Another pipeline's successful runs.", PIPELINE_TRIGGER_FIELDS, json!({
                "name": {"description": "The upstream pipeline.", "$ref": "#/definitions/name"},
                "when": {
                    "description": "Expression over the upstream run (`metrics.psi > 0.2`); absent: every success.",
                    "type": "string",
                },
                "params": {
                    "description": "This pipeline's params, each an expression over the upstream run.",
                    "type": "object",
                    "additionalProperties": {"$ref": "#/definitions/scalar"},
                },
            })),
            json!({"required": ["name"]}),
        ),
        "webhookTrigger": closed_object("A signed webhook delivery starts a run.", WEBHOOK_TRIGGER_FIELDS, json!({
            "params": {
                "description": "This pipeline's params, each a JSON pointer into the delivery's body (`/data/rows`).",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
        })),
        "schedule": extended(
            closed_object("A cron schedule for runs.", SCHEDULE_FIELDS, schedule_properties()),
            json!({"required": ["cron"]}),
        ),
        "retries": {
            "description": "A retry limit, or `{limit, backoff, max_backoff}`.",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                closed_object("Retries with exponential backoff.", RETRY_FIELDS, json!({
                    "limit": {
                        "description": "How many times to retry.",
                        "type": "integer",
                        "minimum": 0,
                    },
                    "backoff": {
                        "description": "The first delay, doubled at each retry; default 10s.",
                        "$ref": "#/definitions/duration",
                    },
                    "max_backoff": {
                        "description": "The longest delay; default 10m.",
                        "$ref": "#/definitions/duration",
                    },
                })),
            ],
        },
        "cache": {
            "description": "Reuse an earlier success with the same cache key: a bool or `{ttl}`.",
            "oneOf": [
                {"type": "boolean"},
                closed_object("Caching with an expiry.", CACHE_FIELDS, json!({"ttl": {
                    "description": "How long a success stays reusable.",
                    "$ref": "#/definitions/duration",
                }})),
            ],
        },
        "resources": closed_object("What the step needs from a worker.", RESOURCE_FIELDS, json!({
            "cpus": {
                "description": "CPUs: a number > 0 or millicores (`500m`).",
                "$ref": "#/definitions/cpus",
            },
            "memory": {
                "description": "Memory: `512Mi`, `2Gi`, `1G`, or bytes.",
                "$ref": "#/definitions/quantity",
            },
            "gpus": {"description": "Number of GPUs.", "type": "integer", "minimum": 0},
        })),
        "register": extended(
            closed_object("A model registry entry.", REGISTER_FIELDS, json!({
                "model": {
                    "description": "The model to register.",
                    "type": "string",
                    "minLength": 1,
                },
                "file": {
                    "description": "The file to register; one of the step's `outputs`.",
                    "$ref": "#/definitions/relativePath",
                },
                "alias": {
                    "description": "An alias moved to the new version, e.g. `staging`.",
                    "type": "string",
                },
                "when": {
                    "description": "Promotion gate (needs `alias`): the alias moves only when this \
                        holds. `metrics.X` is the new version's metric, `current.metrics.X` that of \
                        the version the alias holds now.",
                    "type": "string",
                },
                "approval": closed_object(
                    "Protects the alias (needs `alias`): every move of it, by this step or by hand, \
                     waits for `weir models approve`.",
                    ALIAS_APPROVAL_FIELDS,
                    json!({
                        "message": {
                            "description": "Shown to the approver and sent with the approval request.",
                            "type": "string",
                            "minLength": 1,
                        },
                        "timeout": {
                            "description": "Without a decision by then the move is refused; default: wait until decided.",
                            "$ref": "#/definitions/duration",
                        },
                    }),
                ),
            })),
            json!({"required": ["model", "file"]}),
        ),
        "approval": extended(
            closed_object("An approval gate before the step runs.", APPROVAL_FIELDS, json!({
                "message": {
                    "description": "Shown to the approver; `{{ params.x }}` templates render as text.",
                    "type": "string",
                    "minLength": 1,
                },
                "timeout": {
                    "description": "Without a decision by then the step fails; default: wait until decided.",
                    "$ref": "#/definitions/duration",
                },
            })),
            json!({"required": ["message"]}),
        ),
        "step": extended(
            closed_object("A step: exactly one of `run` and `command`.", STEP_FIELDS, steps),
            json!({"oneOf": [{"required": ["run"]}, {"required": ["command"]}]}),
        ),
        "stepDefaults": closed_object(
            "Applied to every step unless the step sets the field; `env`, `runs_on` and \
                `resources` merge key by key, the step winning.",
            DEFAULTS_FIELDS,
            Value::Object(defaults),
        ),
    })
}

fn top_level_properties() -> Value {
    json!({
        "version": {"description": "The format version; only 1 exists.", "const": 1},
        "name": {
            "description": "The pipeline's name: `[a-z0-9_-]`, 1 to 63 characters.",
            "$ref": "#/definitions/name",
        },
        "description": {"description": "What the pipeline does.", "type": "string"},
        "params": {
            "description": "Run parameters; each reaches every step as `WEIR_PARAM_<NAME>`.",
            "type": "object",
            "propertyNames": {"$ref": "#/definitions/paramName"},
            "additionalProperties": {"$ref": "#/definitions/param"},
        },
        "defaults": {
            "description": "Step fields applied to every step unless the step sets them.",
            "$ref": "#/definitions/stepDefaults",
        },
        "schedule": {"description": "An optional cron schedule.", "$ref": "#/definitions/schedule"},
        "keep": {
            "description": "Retention: the finished runs kept; older ones are deleted unless a \
                registered model or a cache entry needs them.",
            "$ref": "#/definitions/keep",
        },
        "sla": {
            "description": "How long a run may stay unfinished before `sla_missed` is notified (once).",
            "$ref": "#/definitions/duration",
        },
        "notify": {"description": "Notifications for the pipeline's runs.", "$ref": "#/definitions/notify"},
        "on": {
            "description": "Triggers beside the schedule: `files` (new or changed files in an \
                absolute folder on the engine's host: path, glob, settle), `pipeline` (another \
                pipeline's successful runs: name, when, params) and `webhook` (a signed POST to \
                /hooks/PIPELINE: params as JSON pointers). docs/triggers.md has the details.",
            "$ref": "#/definitions/on",
        },
        "steps": {
            "description": "The steps by name; at least one. File order is kept.",
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"$ref": "#/definitions/name"},
            "additionalProperties": {"$ref": "#/definitions/step"},
        },
    })
}

/// The schema of every step field; `defaults` takes a subset of them.
fn step_properties() -> Value {
    json!({
        "stage": {
            "description": "Free label shown by `weir graph` (ingestion, training, ...).",
            "type": "string",
        },
        "needs": {
            "description": "Dependencies: step names (or one name); a matrix step is waited \
                for as a whole.",
            "oneOf": [
                {"$ref": "#/definitions/name"},
                {"type": "array", "items": {"$ref": "#/definitions/name"}},
            ],
        },
        "run": {
            "description": "A shell script, run by `sh -c`. A `{{ }}` in it becomes a reference to the environment variable that holds the value (`\"${WEIR_PARAM_NAME}\"`), never the value; places where that cannot keep a value out of code (single quotes, heredoc bodies, arithmetic, `sh -c` strings, ...) are refused.",
            "type": "string"
        },
        "command": {
            "description": "An argv, run without a shell.",
            "type": "array",
            "minItems": 1,
            "items": {"type": ["string", "number", "boolean"]},
        },
        "env": {
            "description": "Extra environment variables; `WEIR_` names are reserved.",
            "type": "object",
            "propertyNames": {"$ref": "#/definitions/envName"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "outputs": {
            "description": "Files (or `dir/`) collected on success: relative paths, no `..`.",
            "type": "array",
            "items": {"$ref": "#/definitions/relativePath"},
        },
        "matrix": {
            "description": "Fan-out: one instance per combination of the listed values.",
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/definitions/scalar"},
            },
        },
        "cache": {
            "description": "Reuse an earlier success with the same cache key.",
            "$ref": "#/definitions/cache",
        },
        "resources": {
            "description": "What the step needs from a worker.",
            "$ref": "#/definitions/resources",
        },
        "runtime": {
            "description": "How the step runs; default `process`; `docker` needs `image`.",
            "enum": ["process", "docker"],
        },
        "image": {"description": "Container image for the docker runtime.", "type": "string"},
        "pull": {
            "description": "When the docker runtime pulls `image`: `if-not-present` (default), `always` (a moved tag is seen), `never` (a missing image fails the step at once).",
            "enum": ["if-not-present", "always", "never"],
        },
        "capabilities": {
            "description": "The Linux capabilities a docker step's container keeps, replacing the default set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, NET_BIND_SERVICE, SETGID, SETUID); only names from the safe set, `[]` for none.",
            "type": "array",
            "items": {"enum": crate::spec::capabilities::SAFE},
            "uniqueItems": true,
        },
        "retries": {
            "description": "Retries on failure; default none.",
            "$ref": "#/definitions/retries",
        },
        "timeout": {
            "description": "The step is stopped when it runs longer.",
            "$ref": "#/definitions/duration",
        },
        "when": {
            "description": "Expression evaluated before the step; false: the step is skipped.",
            "type": "string",
        },
        "gate": {
            "description": "Expression evaluated after success; false: the step fails.",
            "type": "string",
        },
        "register": {
            "description": "Register `file` (one of `outputs`) as a version of `model`.",
            "$ref": "#/definitions/register",
        },
        "approval": {
            "description": "A person approves (`weir approve RUN STEP`) or rejects the step before it runs.",
            "$ref": "#/definitions/approval",
        },
        "runs_on": {
            "description": "Worker labels the step requires.",
            "$ref": "#/definitions/stringMap",
        },
        "notify": {"description": "Notifications for this step's events.", "$ref": "#/definitions/notify"},
        "secrets": {
            "description": "Names of the server's secrets (`weir secrets set NAME`) the step receives as environment variables of the same names; values never appear in the file, the run record, the cache key or the logs (docs/secrets.md).",
            "type": "array",
            "maxItems": 64,
            "uniqueItems": true,
            "items": {"$ref": "#/definitions/envName"},
        },
    })
}

fn param_properties() -> Value {
    json!({
        "type": {"description": "The param's type.", "enum": ["int", "float", "bool", "string"]},
        "default": {
            "description": "The value when the run sets none; without it the param is required.",
            "$ref": "#/definitions/scalar",
        },
        "description": {"description": "What the param means.", "type": "string"},
        "enum": {
            "description": "The allowed values.",
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/definitions/scalar"},
        },
        "min": {"description": "The smallest allowed value (int and float).", "type": "number"},
        "max": {"description": "The largest allowed value (int and float).", "type": "number"},
        "pattern": {
            "description": "A regular expression a string must match (anchored by you).",
            "type": "string",
        },
    })
}

/// `default` and `enum` must have the declared type; `min`/`max` are for int and float,
/// `pattern` for string.
fn param_type_rules() -> Vec<Value> {
    let types = [
        ("int", "integer", true, false),
        ("float", "number", true, false),
        ("bool", "boolean", false, false),
        ("string", "string", false, true),
    ];
    types
        .into_iter()
        .map(|(weir_type, json_type, bounded, patterned)| {
            let mut then = json!({"properties": {
                "default": {"type": json_type},
                "enum": {"items": {"type": json_type}},
            }});
            if !bounded {
                then["properties"]["min"] = json!(false);
                then["properties"]["max"] = json!(false);
            }
            if !patterned {
                then["properties"]["pattern"] = json!(false);
            }
            json!({
                "if": {"properties": {"type": {"const": weir_type}}, "required": ["type"]},
                "then": then,
            })
        })
        .collect()
}

fn schedule_properties() -> Value {
    json!({
        "cron": {
            "description": "5 fields (minute hour day-of-month month day-of-week), 6 with \
                seconds first, or @hourly, @daily, @weekly, @monthly, @yearly, @annually.",
            "type": "string",
            "pattern": CRON_PATTERN,
        },
        "timezone": {"description": "An IANA time zone name; default `UTC`.", "type": "string"},
        "catchup": {
            "description": "After downtime: false (default) runs only the latest missed tick, \
                true all of them.",
            "type": "boolean",
        },
        "max_catchup": {
            "description": "With catchup: true, at most this many missed ticks run (default 50); \
                older ones are recorded as skipped.",
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
        },
        "concurrency": {
            "description": "When the previous run still runs: allow, forbid (default), replace.",
            "enum": ["allow", "forbid", "replace"],
        },
        "params": {
            "description": "Param overrides for scheduled runs.",
            "type": "object",
            "propertyNames": {"$ref": "#/definitions/paramName"},
            "additionalProperties": {"$ref": "#/definitions/scalar"},
        },
    })
}

/// A described object whose properties are exactly `fields`, with their schemas from `catalog`.
fn closed_object(description: &str, fields: &[&str], catalog: Value) -> Value {
    let Value::Object(mut catalog) = catalog else {
        panic!("a catalog of property schemas is an object");
    };
    let properties: Map<String, Value> = fields
        .iter()
        .map(|&field| match catalog.remove(field) {
            Some(schema) => (field.to_string(), draft7_ref(schema)),
            None => panic!("the schema lists no property `{field}`"),
        })
        .collect();
    let extra: Vec<&String> = catalog.keys().collect();
    assert!(extra.is_empty(), "properties {extra:?} are missing from {fields:?}");
    json!({
        "description": description,
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// Draft-07 ignores the siblings of `$ref`, so a `$ref` with a description goes in `allOf`.
fn draft7_ref(mut schema: Value) -> Value {
    if let Some(map) = schema.as_object_mut()
        && map.len() > 1
        && let Some(target) = map.remove("$ref")
    {
        map.insert("allOf".to_string(), json!([{"$ref": target}]));
    }
    schema
}

/// `base` with the keys of `extra` added.
fn extended(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> jsonschema::Validator {
        jsonschema::draft7::new(&json_schema()).expect("the schema compiles as draft 7")
    }

    /// pipelines/ml-retrain/pipeline.yaml, as the YAML parser sees it.
    fn ml_retrain() -> Value {
        json!({
            "name": "ml-retrain",
            "description": "Generate a synthetic dataset, clean and normalise it, fit a \
                least-squares model for four settings in parallel, keep the best one if it \
                passes the RMSE gate, and write a deployment manifest.\n",
            "schedule": {
                "cron": "0 3 * * 1-5",
                "timezone": "Europe/Berlin",
                "catchup": false,
                "concurrency": "forbid",
            },
            "params": {
                "rows": 2000,
                "noise": 0.3,
                "seed": 7,
                "max_rmse": {
                    "type": "float",
                    "default": 0.5,
                    "min": 0,
                    "description": "validation gate: the best model's RMSE must stay below this",
                },
                "model_name": {"type": "string", "default": "churn", "pattern": "^[a-z][a-z0-9-]*$"},
                "deploy": {
                    "type": "bool",
                    "default": true,
                    "description": "false: train and validate, skip deployment",
                },
            },
            "defaults": {
                "runtime": "process",
                "image": "python:3.12-slim",
                "retries": {"limit": 2, "backoff": "2s", "max_backoff": "1m"},
                "timeout": "30m",
            },
            "steps": {
                "ingest": {
                    "stage": "ingestion",
                    "run": "python3 steps/ingest.py --rows {{ params.rows }} --noise \
                        {{ params.noise }} --seed {{ params.seed }} --out \"$WEIR_OUTPUTS/raw.csv\"\n",
                    "outputs": ["raw.csv"],
                    "resources": {"cpus": 1, "memory": "256Mi"},
                },
                "preprocess": {
                    "stage": "preprocessing",
                    "needs": ["ingest"],
                    "run": "python3 steps/preprocess.py --in \"$WEIR_INPUTS/ingest/raw.csv\" \
                        --out \"$WEIR_OUTPUTS\"",
                    "outputs": ["features.csv", "scaler.json"],
                    "resources": {"cpus": 1, "memory": "256Mi"},
                },
                "train": {
                    "stage": "training",
                    "needs": ["preprocess"],
                    "matrix": {"l2": [0.0, 1.0], "features": ["linear", "quadratic"]},
                    "command": ["python3", "steps/train.py", "--l2", "{{ matrix.l2 }}",
                        "--features", "{{ matrix.features }}"],
                    "outputs": ["model.json", "metrics.json"],
                    "cache": true,
                    "resources": {"cpus": 1, "memory": "512Mi", "gpus": 0},
                },
                "validate": {
                    "stage": "validation",
                    "needs": ["train"],
                    "run": "python3 steps/select.py --out \"$WEIR_OUTPUTS\"",
                    "outputs": ["best.json", "metrics.json"],
                    "gate": "metrics.rmse < params.max_rmse",
                },
                "deploy": {
                    "stage": "deployment",
                    "needs": ["validate"],
                    "when": "params.deploy",
                    "env": {"MODEL_NAME": "{{ params.model_name }}", "RUN_ID": "{{ run.id }}"},
                    "run": "python3 steps/deploy.py --model \"$WEIR_INPUTS/validate/best.json\" \
                        --out \"$WEIR_OUTPUTS\"",
                    "outputs": ["manifest.json", "model.json"],
                    "register": {"model": "churn", "file": "model.json", "alias": "staging"},
                },
            },
        })
    }

    fn minimal() -> Value {
        json!({"name": "x", "steps": {"a": {"run": "true"}}})
    }

    /// The labels (with the errors) of the cases whose validity is not `expected`. Each case is
    /// `[label, JSON pointer, value]`: the minimal pipeline with `value` put at the pointer
    /// (whose parent must exist); the empty pointer replaces the whole document.
    fn mismatches(cases: &Value, expected: bool) -> Vec<String> {
        let validator = validator();
        let mut failures = Vec::new();
        for case in cases.as_array().expect("an array of cases") {
            let (label, pointer, value) = (&case[0], case[1].as_str().unwrap(), &case[2]);
            let mut document = minimal();
            match pointer.rsplit_once('/') {
                None => document = value.clone(),
                Some((parent, key)) => {
                    let parent = document.pointer_mut(parent).expect("the parent exists");
                    parent[key] = value.clone();
                }
            }
            if validator.is_valid(&document) != expected {
                let errors: Vec<String> = validator
                    .iter_errors(&document)
                    .map(|error| format!("{error} at {}", error.instance_path()))
                    .collect();
                failures.push(format!("{label}: {errors:?}"));
            }
        }
        failures
    }

    /// Every closed object schema (`"type": "object"` with `properties`) inside `schema`.
    fn objects<'a>(schema: &'a Value, found: &mut Vec<&'a Value>) {
        match schema {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("object")) && map.contains_key("properties") {
                    found.push(schema);
                }
                map.values().for_each(|value| objects(value, found));
            }
            Value::Array(items) => items.iter().for_each(|value| objects(value, found)),
            _ => {}
        }
    }

    fn sorted_keys(map: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = map.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    fn sorted<'a>(fields: &[&'a str]) -> Vec<&'a str> {
        let mut fields = fields.to_vec();
        fields.sort_unstable();
        fields
    }

    #[test]
    fn schema_is_valid_draft7() {
        let schema = json_schema();
        assert!(jsonschema::draft7::meta::is_valid(&schema));
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(schema["$id"], "https://weir.dev/schema/pipeline-v1.json");
        validator();
    }

    #[test]
    fn declared_properties_match_the_field_lists() {
        let schema = json_schema();
        let definitions = &schema["definitions"];
        let cases = [
            (&schema, TOP_LEVEL_FIELDS),
            (&definitions["step"], STEP_FIELDS),
            (&definitions["stepDefaults"], DEFAULTS_FIELDS),
            (&definitions["param"]["oneOf"][1], PARAM_FIELDS),
            (&definitions["schedule"], SCHEDULE_FIELDS),
            (&definitions["keep"], KEEP_FIELDS),
            (&definitions["notify"]["items"], NOTIFY_FIELDS),
            (&definitions["retries"]["oneOf"][1], RETRY_FIELDS),
            (&definitions["resources"], RESOURCE_FIELDS),
            (&definitions["register"], REGISTER_FIELDS),
            (&definitions["cache"]["oneOf"][1], CACHE_FIELDS),
            (&definitions["approval"], APPROVAL_FIELDS),
            (&definitions["on"], ON_FIELDS),
            (&definitions["filesTrigger"], FILES_TRIGGER_FIELDS),
            (&definitions["pipelineTrigger"], PIPELINE_TRIGGER_FIELDS),
            (&definitions["webhookTrigger"], WEBHOOK_TRIGGER_FIELDS),
        ];
        for (object, fields) in cases {
            assert_eq!(sorted_keys(&object["properties"]), sorted(fields));
        }
    }

    #[test]
    fn every_object_is_closed_and_every_property_described() {
        let schema = json_schema();
        let mut found = Vec::new();
        objects(&schema, &mut found);
        // The top level, step, defaults, param, schedule, keep, notify, on and its three triggers,
        // retries, resources, register, register's approval, approval, cache.
        assert_eq!(found.len(), 17);
        for object in found {
            assert_eq!(object["additionalProperties"], false, "{object}");
            for (name, property) in object["properties"].as_object().unwrap() {
                assert!(property["description"].is_string(), "{name} has no description");
                let has_ref = property.get("$ref").is_some();
                assert!(!has_ref || property.as_object().unwrap().len() == 1, "{name}");
            }
        }
    }

    #[test]
    fn defaults_fields_are_step_fields_with_the_same_schema() {
        let schema = json_schema();
        let step = &schema["definitions"]["step"]["properties"];
        let defaults = &schema["definitions"]["stepDefaults"]["properties"];
        for field in DEFAULTS_FIELDS {
            assert!(STEP_FIELDS.contains(field), "{field}");
            assert_eq!(defaults[field], step[field], "{field}");
        }
    }

    #[test]
    fn ml_retrain_and_minimal_pipelines_are_valid() {
        let cases = json!([["ml-retrain", "", ml_retrain()], ["minimal", "", minimal()]]);
        let failures = mismatches(&cases, true);
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn accepts_every_documented_form() {
        let cases = json!([
            ["version 1", "/version", 1],
            ["x- key", "/x-anchors", {"env": {"A": "b"}}],
            ["command", "/steps/a", {"command": ["python3", "a.py"]}],
            ["needs one name", "/steps/a/needs", "b"],
            ["retries int", "/steps/a/retries", 3],
            ["retries map", "/steps/a/retries", {"limit": 1, "max_backoff": "1h"}],
            ["cache ttl", "/steps/a/cache", {"ttl": "1h30m"}],
            ["timeout ms", "/steps/a/timeout", "1500ms"],
            ["millicores", "/steps/a/resources", {"cpus": "500m"}],
            ["fractional cpus", "/steps/a/resources", {"cpus": 0.5}],
            ["memory bytes", "/steps/a/resources", {"memory": 1048576}],
            ["memory 1G", "/steps/a/resources", {"memory": "1G", "gpus": 2}],
            ["docker", "/steps/a", {"run": "x", "runtime": "docker", "image": "a"}],
            ["output dir", "/steps/a/outputs", ["models/", "a/b..c", ".hidden"]],
            ["runs_on", "/steps/a/runs_on", {"pool": "gpu"}],
            ["matrix", "/steps/a/matrix", {"lr": [0.1, 1], "fast": [true], "m": ["a"]}],
            ["string shorthand", "/params", {"Mode": "fast", "_x": false}],
            ["required param", "/params", {"data": {"type": "string"}}],
            ["int enum", "/params", {"k": {"type": "int", "enum": [1, 2], "max": 3}}],
            ["@daily", "/schedule", {"cron": "@daily"}],
            ["6-field cron", "/schedule", {"cron": "0 */5 * * * *", "catchup": true}],
            ["schedule params", "/schedule", {"cron": "@hourly", "params": {"rows": 5}}],
            ["defaults", "/defaults", {"env": {"A": "1"}, "cache": false, "runs_on": {}}],
            ["approval", "/steps/a/approval", {"message": "ship it?", "timeout": "24h"}],
            ["approval forever", "/steps/a/approval", {"message": "ship it?"}],
            ["files trigger", "/on", {"files": {"path": "/data/in", "glob": "*.csv", "settle": "10s"}}],
            ["files triggers", "/on", {"files": [{"path": "/a"}, {"path": "/b"}]}],
            ["pipeline trigger", "/on", {"pipeline": {"name": "drift-monitor", "when": "metrics.psi > 0.2"}}],
            ["webhook trigger", "/on", {"webhook": {}}],
            ["secrets", "/steps/a/secrets", ["DB_PASSWORD", "_api_token"]],
        ]);
        let failures = mismatches(&cases, true);
        assert!(failures.is_empty(), "rejected: {failures:#?}");
    }

    #[test]
    fn rejects_malformed_pipelines() {
        let cases = json!([
            ["unknown step field", "/steps/a/neds", ["b"]],
            ["run and command", "/steps/a/command", ["true"]],
            ["neither run nor command", "/steps/a", {"stage": "x"}],
            ["bad step name", "/steps/Bad Name", {"run": "true"}],
            ["bad duration", "/steps/a/timeout", "5 minutes"],
            ["absolute output", "/steps/a/outputs", ["/etc/passwd"]],
            ["parent output", "/steps/a/outputs", ["../x"]],
            ["inner parent output", "/steps/a/outputs", ["a/../../x"]],
            ["runtime podman", "/steps/a/runtime", "podman"],
            ["concurrency", "/schedule", {"cron": "@daily", "concurrency": "sometimes"}],
            ["reserved env", "/steps/a/env", {"WEIR_X": "1"}],
            ["reserved secret", "/steps/a/secrets", ["WEIR_TOKEN"]],
            ["secret named twice", "/steps/a/secrets", ["A", "A"]],
            ["secret not a list", "/steps/a/secrets", "A"],
            ["secret name with a dash", "/steps/a/secrets", ["DB-PASSWORD"]],
            ["empty matrix list", "/steps/a/matrix", {"lr": []}],
            ["matrix object", "/steps/a/matrix", {"lr": [{"a": 1}]}],
            ["version 2", "/version", 2],
            ["unknown top-level key", "/stpes", {}],
            ["x- key in a step", "/steps/a/x-note", "n"],
            ["no steps", "/steps", {}],
            ["no name", "", {"steps": {"a": {"run": "true"}}}],
            ["bad needs name", "/steps/a/needs", ["Other Step"]],
            ["empty command", "/steps/a", {"command": []}],
            ["zero cpus", "/steps/a/resources", {"cpus": 0}],
            ["zero millicores", "/steps/a/resources", {"cpus": "0m"}],
            ["memory 2GB", "/steps/a/resources", {"memory": "2GB"}],
            ["fractional gpus", "/steps/a/resources", {"gpus": 1.5}],
            ["negative retries", "/steps/a/retries", -1],
            ["retries typo", "/steps/a/retries", {"limt": 2}],
            ["bad ttl", "/steps/a/cache", {"ttl": "soon"}],
            ["register without file", "/steps/a/register", {"model": "m"}],
            ["env value list", "/steps/a/env", {"A": [1]}],
            ["defaults with run", "/defaults", {"run": "true"}],
            ["param name", "/params", {"1rows": 5}],
            ["param type", "/params", {"r": {"type": "decimal"}}],
            ["int default", "/params", {"r": {"type": "int", "default": "x"}}],
            ["string min", "/params", {"r": {"type": "string", "min": 1}}],
            ["int pattern", "/params", {"r": {"type": "int", "pattern": "x"}}],
            ["cron words", "/schedule", {"cron": "every day"}],
            ["no cron", "/schedule", {"timezone": "UTC"}],
            ["approval without message", "/steps/a/approval", {"timeout": "1h"}],
            ["approval by", "/steps/a/approval", {"message": "go?", "by": "alice"}],
            ["approval as text", "/steps/a/approval", "go?"],
            ["relative trigger folder", "/on", {"files": {"path": "data/in"}}],
            ["trigger kind typo", "/on", {"file": {"path": "/a"}}],
            ["files trigger without path", "/on", {"files": {"glob": "*"}}],
            ["webhook list", "/on", {"webhook": [{}]}],
            ["no trigger", "/on", {}],
            ["trigger settle words", "/on", {"files": {"path": "/a", "settle": "a while"}}],
        ]);
        let failures = mismatches(&cases, false);
        assert!(failures.is_empty(), "accepted: {failures:#?}");
    }
}
