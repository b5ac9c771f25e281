//! What an audit entry says a request was about (`run_id=r-1 step=train`), read from the
//! request message itself through the compiled descriptors, so every mutating method, present
//! and future, names its target without code of its own: the top-level string, integer and
//! bool fields, in field order, each cut short. Fields whose name suggests a secret or a
//! payload (token, secret, password, value, payload, body, data, content, yaml) are never
//! read. A handler whose target is not in its first message (a streamed submission) adds it
//! through the [`AuditNote`] in the request's extensions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};

/// Names of fields never recorded.
const HIDDEN: [&str; 9] = ["token", "secret", "password", "value", "payload", "body", "data", "content", "yaml"];
/// The most one field's text may take in a target, and the whole target.
const MAX_FIELD: usize = 120;
const MAX_TARGET: usize = 400;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Flag,
}

/// A request field worth recording: its number, name and kind.
type Field = (u32, String, Kind);

/// Every method's request fields worth recording, and whether it streams its requests.
#[derive(Default)]
pub(crate) struct Methods {
    by_path: HashMap<String, (Vec<Field>, bool)>,
}

impl Methods {
    /// From weir's encoded descriptor set, decoded through [`lean`]: only the names, fields and
    /// methods this table reads are built; prost skips the rest (every comment of the
    /// source-code info, options, nested types) without allocating it. Decoding the whole set
    /// as `prost_types` was 5.9 of the 13 million instructions of a one-step `weir run`.
    pub(crate) fn load() -> Methods {
        let Ok(set) = lean::FileSet::decode(weir_proto::FILE_DESCRIPTOR_SET) else {
            tracing::warn!("cannot read the compiled descriptors: audit entries name no targets");
            return Methods::default();
        };
        let mut messages = HashMap::new();
        for file in &set.file {
            for m in &file.message_type {
                messages.insert(format!(".{}.{}", file.package, m.name), m);
            }
        }
        let mut by_path = HashMap::new();
        for file in &set.file {
            for s in &file.service {
                for m in &s.method {
                    let path = format!("/{}.{}/{}", file.package, s.name, m.name);
                    let fields = messages
                        .get(&m.input_type)
                        .map(|d| {
                            d.field
                                .iter()
                                .filter(|f| f.label != Label::Repeated as i32)
                                .filter(|f| !HIDDEN.iter().any(|h| f.name.contains(h)))
                                .filter_map(|f| {
                                    let kind = match Type::try_from(f.r#type).ok()? {
                                        Type::String => Kind::Text,
                                        Type::Bool => Kind::Flag,
                                        Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => Kind::Number,
                                        _ => return None,
                                    };
                                    Some((f.number as u32, f.name.clone(), kind))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    by_path.insert(path, (fields, m.client_streaming));
                }
            }
        }
        Methods { by_path }
    }

    pub(crate) fn client_streaming(&self, path: &str) -> bool {
        self.by_path.get(path).is_none_or(|(_, streaming)| *streaming)
    }

    /// The target of the unary request `body` (one gRPC frame) of `path`; empty when it cannot
    /// be read (compressed, malformed: the handler refuses it anyway).
    pub(crate) fn target(&self, path: &str, body: &[u8]) -> String {
        let Some((fields, _)) = self.by_path.get(path) else { return String::new() };
        let Some(msg) = body.get(5..).filter(|_| body.first() == Some(&0)) else { return String::new() };
        let mut found: Vec<(usize, String)> = Vec::new();
        let mut at = msg;
        while !at.is_empty() {
            let Some((key, rest)) = varint(at) else { break };
            let (number, wire) = ((key >> 3) as u32, key & 7);
            let field = fields.iter().position(|(n, _, _)| *n == number);
            let (value, rest) = match wire {
                0 => match varint(rest) {
                    Some((v, rest)) => (field.map(|i| shown_number(fields[i].2, v)), rest),
                    None => break,
                },
                1 => (None, rest.get(8..).unwrap_or_default()),
                5 => (None, rest.get(4..).unwrap_or_default()),
                2 => match varint(rest) {
                    Some((len, rest)) if (len as usize) <= rest.len() => {
                        let (bytes, rest) = rest.split_at(len as usize);
                        let text = field
                            .filter(|i| fields[*i].2 == Kind::Text)
                            .and_then(|_| std::str::from_utf8(bytes).ok())
                            .filter(|t| !t.is_empty())
                            .map(clip);
                        (text, rest)
                    }
                    _ => break,
                },
                _ => break,
            };
            if let (Some(i), Some(v)) = (field, value) {
                found.push((i, format!("{}={v}", fields[i].1)));
            }
            at = rest;
        }
        found.sort_by_key(|(i, _)| *i);
        clip_to(found.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(" "), MAX_TARGET)
    }
}

fn shown_number(kind: Kind, v: u64) -> String {
    match kind {
        Kind::Flag => (v != 0).to_string(),
        _ => v.to_string(),
    }
}

/// A value as recorded: control characters and spaces replaced, cut at [`MAX_FIELD`].
fn clip(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() || c == ' ' { '_' } else { c }).collect();
    clip_to(clean, MAX_FIELD)
}

fn clip_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

/// The parts of `google.protobuf.FileDescriptorSet` that [`Methods::load`] reads, with the
/// descriptor's own field numbers (descriptor.proto); every other field is skipped on decode.
mod lean {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileSet {
        #[prost(message, repeated, tag = "1")]
        pub file: Vec<File>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct File {
        #[prost(string, tag = "2")]
        pub package: String,
        #[prost(message, repeated, tag = "4")]
        pub message_type: Vec<MessageType>,
        #[prost(message, repeated, tag = "6")]
        pub service: Vec<Service>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MessageType {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub field: Vec<Field>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Field {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int32, tag = "3")]
        pub number: i32,
        #[prost(int32, tag = "4")]
        pub label: i32,
        #[prost(int32, tag = "5")]
        pub r#type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Service {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub method: Vec<Method>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Method {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub input_type: String,
        #[prost(bool, tag = "5")]
        pub client_streaming: bool,
    }
}

/// What a handler adds to its request's audit target.
#[derive(Clone, Default)]
pub(crate) struct AuditNote(Arc<Mutex<Vec<String>>>);

impl AuditNote {
    /// Adds `text` (`pipeline=train`) to the target of the request whose extensions held this.
    pub(crate) fn push(&self, text: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }

    /// `target` with what the handler added.
    pub(crate) fn joined(&self, target: String) -> String {
        let added = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<&str> = std::iter::once(target.as_str())
            .chain(added.iter().map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        clip_to(all.join(" "), MAX_TARGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::v1;

    fn frame(msg: impl Message) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0];
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn targets_name_the_request_fields_and_never_hidden_ones() {
        let m = Methods::load();
        let cancel = frame(v1::CancelRunRequest { run_id: "r-1 x".into(), ..Default::default() });
        assert_eq!(m.target("/weir.v1.WeirClient/CancelRun", &cancel), "run_id=r-1_x");
        let create = frame(v1::CreateTokenRequest { name: "alice".into(), role: "viewer".into() });
        assert_eq!(m.target("/weir.v1.WeirAccess/CreateToken", &create), "name=alice role=viewer");
        assert!(m.client_streaming("/weir.v1.WeirClient/SubmitPipeline"));
        assert!(!m.client_streaming("/weir.v1.WeirClient/CancelRun"));
        // garbage never panics
        for bad in
            [&b""[..], &[0, 0, 0, 0, 9, 0xff, 0xff][..], &[1, 0, 0, 0, 1, 8][..], &[0, 0, 0, 0, 3, 0x0a, 200, 1][..]]
        {
            let _ = m.target("/weir.v1.WeirClient/CancelRun", bad);
        }
        let long = frame(v1::CancelRunRequest { run_id: "r".repeat(500), ..Default::default() });
        assert!(m.target("/weir.v1.WeirClient/CancelRun", &long).len() < 200);
    }

    /// The lean decode reads the same table as the full `prost_types` one: every method, its
    /// streaming, and each request field's number, name, label and type.
    #[test]
    fn the_lean_descriptors_read_what_the_full_ones_say() {
        let full = prost_types::FileDescriptorSet::decode(weir_proto::FILE_DESCRIPTOR_SET).unwrap();
        let lean = lean::FileSet::decode(weir_proto::FILE_DESCRIPTOR_SET).unwrap();
        assert_eq!(full.file.len(), lean.file.len());
        let mut methods = 0;
        for (f, l) in full.file.iter().zip(&lean.file) {
            assert_eq!(f.package(), l.package);
            assert_eq!(f.message_type.len(), l.message_type.len());
            for (fm, lm) in f.message_type.iter().zip(&l.message_type) {
                assert_eq!(fm.name(), lm.name);
                let fields: Vec<_> =
                    fm.field.iter().map(|x| (x.name().to_string(), x.number(), x.label, x.r#type)).collect();
                let lean_fields: Vec<_> =
                    lm.field.iter().map(|x| (x.name.clone(), x.number, Some(x.label), Some(x.r#type))).collect();
                assert_eq!(fields, lean_fields, "{}", fm.name());
            }
            assert_eq!(f.service.len(), l.service.len());
            for (fs, ls) in f.service.iter().zip(&l.service) {
                assert_eq!(fs.name(), ls.name);
                let ms: Vec<_> = fs.method.iter().map(|m| (m.name(), m.input_type(), m.client_streaming())).collect();
                let lms: Vec<_> =
                    ls.method.iter().map(|m| (m.name.as_str(), m.input_type.as_str(), m.client_streaming)).collect();
                assert_eq!(ms, lms);
                methods += ms.len();
            }
        }
        assert!(methods > 50, "the services' methods were read ({methods})");
        assert_eq!(Methods::load().by_path.len(), methods);
    }
}
