//! Turns domain events into stored rows and back: encrypts personal fields on the way in,
//! decrypts (or marks erased) and upcasts on the way out. Every read path goes through
//! [`Codec::decode`], so upcasting and erasure apply everywhere alike.

use crate::crypto::Key;
use crate::crypto::{self, CryptoError};
use crate::store::{NewEvent, RecordedEvent};
use crate::vault::{PendingKey, SubjectKey, Vault, VaultError};
use chrono::{DateTime, Utc};
use egec_domain::encoding::{DecodeError, DecryptedEvent, Encoded, split_payload, upcast};
use egec_domain::event::{DomainEvent, Envelope, Metadata};
use egec_domain::personal::Personal;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

mod parsed;
pub use parsed::ParsedEvent;
use parsed::StoredMetadata;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("event at position {position}: {problem}")]
    Corrupt { position: i64, problem: String },
}

/// What decoding does with an event's security metadata: the IP address and user agent,
/// encrypted under the key of the month they were recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityFields {
    /// Decrypted (or marked expired), for whoever shows or audits them.
    Decrypt,
    /// Left encrypted and out of the envelope (`ip` and `user_agent` are `None`), for folds
    /// that never read them: aggregates and read models. It saves two decryptions and a key
    /// look-up per event, about a third of decoding a customer update.
    Omit,
}

/// The data subject whose key encrypts a month's IP addresses and user agents.
pub fn retention_subject(at: DateTime<Utc>) -> String {
    egec_domain::retention::Month::of(at).subject()
}

/// Whether a subject is a month's retention subject: its destroyed key means the fields
/// expired (`[EXPIRED]`), not that a person was erased (`[ERASED]`).
pub fn is_retention_subject(subject: &str) -> bool {
    egec_domain::retention::Month::of_subject(subject).is_some()
}

pub struct Codec {
    vault: Arc<Vault>,
}

impl Codec {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// Encrypts `fields` under `key` if given, else under the subject's current key.
    async fn encrypt_map(
        &self,
        subject: &str,
        key: Option<&Key>,
        event_id: Uuid,
        fields: &BTreeMap<String, String>,
    ) -> Result<Map<String, Value>, CodecError> {
        let mut out = Map::new();
        if fields.is_empty() {
            return Ok(out);
        }
        let (version, key) = match key {
            Some(k) => (1, k.clone()),
            None => self.vault.for_write(subject).await?,
        };
        for (name, plain) in fields {
            let aad = crypto::field_aad(&event_id, subject, name);
            out.insert(
                name.clone(),
                Value::String(crypto::encrypt_field(&key, version, plain, &aad)?),
            );
        }
        Ok(out)
    }

    /// The stored form of an event: personal fields encrypted under `subject`'s key, IP and
    /// user agent under the current month's retention key.
    pub async fn encode(
        &self,
        subject: &str,
        event_id: Uuid,
        event: &DomainEvent,
        meta: &Metadata,
    ) -> Result<NewEvent, CodecError> {
        Ok(self
            .encode_inner(subject, None, event_id, event, meta)
            .await?
            .0)
    }

    /// Like [`Codec::encode`], but encrypts the subject's personal fields under a pending
    /// first key instead of asking the vault. Also answers whether the key was used (the
    /// event had personal fields): only then must the key be stored with the event.
    pub async fn encode_with_pending(
        &self,
        pending: &PendingKey,
        event_id: Uuid,
        event: &DomainEvent,
        meta: &Metadata,
    ) -> Result<(NewEvent, bool), CodecError> {
        self.encode_inner(&pending.subject, Some(&pending.key), event_id, event, meta)
            .await
    }

    async fn encode_inner(
        &self,
        subject: &str,
        key: Option<&Key>,
        event_id: Uuid,
        event: &DomainEvent,
        meta: &Metadata,
    ) -> Result<(NewEvent, bool), CodecError> {
        let enc = event.encode();
        let used_key = !enc.personal.is_empty();
        let personal = self
            .encrypt_map(subject, key, event_id, &enc.personal)
            .await?;
        let mut payload = Map::new();
        payload.insert("facts".into(), Value::Object(enc.facts));
        payload.insert("personal".into(), Value::Object(personal));
        payload.insert("subject".into(), Value::String(subject.to_owned()));

        let mut meta_personal = BTreeMap::new();
        if let Some(Personal::Known(ip)) = &meta.ip {
            meta_personal.insert("ip".to_owned(), ip.clone());
        }
        if let Some(Personal::Known(ua)) = &meta.user_agent {
            meta_personal.insert("user_agent".to_owned(), ua.clone());
        }
        let retention = retention_subject(meta.occurred_at);
        let meta_enc = match self
            .encrypt_map(&retention, None, event_id, &meta_personal)
            .await
        {
            Ok(enc) => enc,
            // An event dated in a month whose retention already ran (a back-dated import, a
            // clock far behind) must not revive that month's key, and its IP address and
            // user agent are past their keeping time anyway: they are not stored.
            Err(CodecError::Vault(VaultError::Erased)) if is_retention_subject(&retention) => {
                Map::new()
            }
            Err(e) => return Err(e),
        };
        let mut metadata = json!({
            "actor_id": meta.actor_id.map(|a| a.to_string()),
            "actor_role": meta.actor_role.map(|r| r.as_str()),
            "correlation_id": meta.correlation_id.to_string(),
            "causation_id": meta.causation_id.map(|c| c.to_string()),
            "occurred_at": egec_domain::encoding::time_fact(meta.occurred_at),
        });
        // Only batch events carry the key, so every other event's stored metadata (and so
        // its hash) is exactly what it was before batches existed.
        if let (Some(b), Some(m)) = (meta.batch_id, metadata.as_object_mut()) {
            m.insert("batch_id".into(), Value::String(b.to_string()));
        }
        if !meta_enc.is_empty()
            && let Some(m) = metadata.as_object_mut()
        {
            m.insert("retention_subject".into(), Value::String(retention));
            m.insert("personal".into(), Value::Object(meta_enc));
        }
        let stored = NewEvent {
            event_id,
            event_type: enc.event_type,
            schema_version: enc.schema_version,
            payload: Value::Object(payload),
            metadata,
        };
        Ok((stored, used_key))
    }

    async fn decrypt_map(
        &self,
        subject: &str,
        event_id: Uuid,
        fields: &BTreeMap<String, String>,
        position: i64,
    ) -> Result<BTreeMap<String, Personal<String>>, CodecError> {
        let corrupt = |problem: String| CodecError::Corrupt { position, problem };
        let mut out = BTreeMap::new();
        if fields.is_empty() {
            return Ok(out);
        }
        let keys = self.vault.for_read(subject).await?;
        let retention = is_retention_subject(subject);
        for (name, stored) in fields {
            let value = match &keys {
                SubjectKey::Erased if retention => Personal::Expired,
                SubjectKey::Erased => Personal::Erased,
                SubjectKey::Missing => {
                    return Err(corrupt(format!(
                        "field {name} is encrypted but its subject has no key"
                    )));
                }
                SubjectKey::Live(keys) => {
                    let (version, sealed) = crypto::parse_field(stored)
                        .map_err(|_| corrupt(format!("field {name} is not a ciphertext")))?;
                    let key = usize::try_from(version - 1)
                        .ok()
                        .and_then(|i| keys.get(i))
                        .ok_or_else(|| {
                            corrupt(format!("field {name} names unknown key version"))
                        })?;
                    let aad = crypto::field_aad(&event_id, subject, name);
                    Personal::Known(crypto::decrypt_field(key, &sealed, &aad)?)
                }
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// Decrypts one stored event's personal fields (or marks them erased) and upcasts it to
    /// the current schema, without decoding it into a domain type: the view compliance
    /// replay prints.
    pub async fn decrypt(&self, rec: &RecordedEvent) -> Result<DecryptedEvent, CodecError> {
        let (facts, personal) = split_payload(&rec.payload)?;
        let subject = rec.payload.get("subject").and_then(Value::as_str);
        let personal = self
            .decrypt_payload(subject, rec.event_id, &personal, rec.global_position)
            .await?;
        Ok(upcast(Encoded {
            event_type: rec.event_type.clone(),
            schema_version: rec.schema_version,
            facts,
            personal,
        })?)
    }

    /// Decrypts a payload's personal fields under its subject's keys.
    async fn decrypt_payload(
        &self,
        subject: Option<&str>,
        event_id: Uuid,
        personal: &BTreeMap<String, String>,
        position: i64,
    ) -> Result<BTreeMap<String, Personal<String>>, CodecError> {
        match subject {
            Some(s) => self.decrypt_map(s, event_id, personal, position).await,
            None if personal.is_empty() => Ok(BTreeMap::new()),
            None => Err(CodecError::Corrupt {
                position,
                problem: "personal fields without a subject".to_owned(),
            }),
        }
    }

    /// Decrypts, upcasts and decodes one stored event that the caller hands over: the
    /// payload is taken apart instead of copied. What a fold of many events uses.
    pub async fn decode_owned(
        &self,
        rec: RecordedEvent,
        security: SecurityFields,
    ) -> Result<Envelope, CodecError> {
        self.decode_parsed(ParsedEvent::from_recorded(rec)?, security)
            .await
    }

    /// Decrypts, upcasts and decodes an event taken apart by [`ParsedEvent::parse`] (from
    /// stored JSON text) or [`ParsedEvent::from_recorded`].
    pub async fn decode_parsed(
        &self,
        p: ParsedEvent,
        security: SecurityFields,
    ) -> Result<Envelope, CodecError> {
        let position = p.global_position;
        let personal = self
            .decrypt_payload(p.subject.as_deref(), p.event_id, &p.personal, position)
            .await?;
        let metadata = self
            .metadata_of(p.metadata, p.event_id, position, p.recorded_at, security)
            .await?;
        let event = DomainEvent::decode(Encoded {
            event_type: p.event_type,
            schema_version: p.schema_version,
            facts: p.facts,
            personal,
        })?;
        Ok(Envelope {
            position,
            stream_id: p.stream_id,
            stream_version: p.stream_version,
            event_id: p.event_id,
            command_id: p.command_id,
            recorded_at: p.recorded_at,
            metadata,
            event,
        })
    }

    /// Decodes a batch of stored events, loading the keys of all their subjects (payload
    /// subjects and metadata retention subjects) that are not cached yet with one query
    /// first, instead of one query per subject. Answers each event on its own, in order.
    pub async fn decode_batch(&self, recs: &[RecordedEvent]) -> Vec<Result<Envelope, CodecError>> {
        let mut subjects: Vec<String> = Vec::new();
        for rec in recs {
            if let Some(s) = rec.payload.get("subject").and_then(Value::as_str) {
                subjects.push(s.to_owned());
            }
            if let Some(s) = rec
                .metadata
                .get("retention_subject")
                .and_then(Value::as_str)
            {
                subjects.push(s.to_owned());
            }
        }
        if let Err(e) = self.vault.preload(&subjects).await {
            // Not fatal: decoding below asks for each missing key on its own and reports
            // the failure against the event it belongs to.
            tracing::warn!(error = %e, "bulk key load failed; decoding event by event");
        }
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            out.push(self.decode(rec).await);
        }
        out
    }

    /// Decrypts, upcasts and decodes one stored event.
    pub async fn decode(&self, rec: &RecordedEvent) -> Result<Envelope, CodecError> {
        let decrypted = self.decrypt(rec).await?;
        self.decode_decrypted(rec, decrypted).await
    }

    /// Finishes decoding an event whose payload [`Codec::decrypt`] already produced, so a
    /// caller that needs both views decrypts once.
    pub async fn decode_decrypted(
        &self,
        rec: &RecordedEvent,
        decrypted: DecryptedEvent,
    ) -> Result<Envelope, CodecError> {
        let position = rec.global_position;
        let event = DomainEvent::decode(decrypted)?;
        let metadata = self.decode_metadata(rec, SecurityFields::Decrypt).await?;
        Ok(Envelope {
            position,
            stream_id: rec.stream_id.clone(),
            stream_version: rec.stream_version,
            event_id: rec.event_id,
            command_id: rec.command_id,
            recorded_at: rec.recorded_at,
            metadata,
            event,
        })
    }

    async fn decode_metadata(
        &self,
        rec: &RecordedEvent,
        security: SecurityFields,
    ) -> Result<Metadata, CodecError> {
        let position = rec.global_position;
        let stored = StoredMetadata::from_value(rec.metadata.clone(), position)?;
        self.metadata_of(stored, rec.event_id, position, rec.recorded_at, security)
            .await
    }

    /// The metadata of an event from its stored fields: ids parsed, the security fields
    /// decrypted or left out, the time of the action defaulting to the time of recording.
    async fn metadata_of(
        &self,
        m: StoredMetadata,
        event_id: Uuid,
        position: i64,
        recorded_at: DateTime<Utc>,
        security: SecurityFields,
    ) -> Result<Metadata, CodecError> {
        let corrupt = |problem: &str| CodecError::Corrupt {
            position,
            problem: problem.to_owned(),
        };
        let uuid = |v: Option<String>, k: &str| -> Result<Option<Uuid>, CodecError> {
            v.map(|s| Uuid::parse_str(&s).map_err(|_| corrupt(k)))
                .transpose()
        };
        let mut personal = match (&m.retention_subject, security) {
            (Some(s), SecurityFields::Decrypt) => {
                self.decrypt_map(s, event_id, &m.personal, position).await?
            }
            _ => BTreeMap::new(),
        };
        let occurred_at = m
            .occurred_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(recorded_at);
        Ok(Metadata {
            actor_id: uuid(m.actor_id, "actor_id")?.map(egec_domain::UserId::from_uuid),
            actor_role: match m.actor_role {
                Some(r) => Some(r.parse().map_err(|_| corrupt("actor_role"))?),
                None => None,
            },
            ip: personal.remove("ip"),
            user_agent: personal.remove("user_agent"),
            correlation_id: uuid(m.correlation_id, "correlation_id")?.unwrap_or(Uuid::nil()),
            causation_id: uuid(m.causation_id, "causation_id")?,
            batch_id: uuid(m.batch_id, "batch_id")?,
            occurred_at,
        })
    }
}
