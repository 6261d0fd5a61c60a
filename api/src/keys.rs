//! Master-key rotation without touching the log: every subject key is unwrapped with the
//! master key that wrapped it and wrapped again under the new one (`egec keys
//! rotate-master`). Events stay encrypted under their subject keys, byte for byte, so the
//! hash chain and every ciphertext in the log are unchanged.

use egec_commands::master_key::MasterKey;
use egec_commands::store::KeyTable;
use egec_commands::vault::Vault;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// Subject keys now wrapped under the new master key that were not before.
    pub rewrapped: usize,
    /// Subject keys that already were (a rotation interrupted and run again).
    pub already_current: usize,
}

/// Re-wraps every subject key under `new`, unwrapping with `new` or one of `previous`.
/// Idempotent: run it again after an interruption. Fails, naming no key material, if a
/// subject key was wrapped by a master key that is not given.
pub async fn rotate_master(
    table: Arc<dyn KeyTable>,
    new: MasterKey,
    previous: Vec<MasterKey>,
) -> anyhow::Result<RotationReport> {
    let new_id = new.id().to_owned();
    let vault = Vault::new(table.clone(), new, 1).with_previous(previous);
    let mut report = RotationReport {
        rewrapped: 0,
        already_current: 0,
    };
    for (subject, wrapped) in table.all_keys().await? {
        if wrapped.kek_id == new_id {
            report.already_current += 1;
            continue;
        }
        let key = vault.unwrap_key(&subject, &wrapped).map_err(|e| {
            anyhow::anyhow!(
                "a subject key (version {}) cannot be unwrapped: {e}; set \
                 EGEC_MASTER_KEY_PREVIOUS to the master key it was wrapped with",
                wrapped.key_version
            )
        })?;
        let rewrapped = vault.wrap(&subject, wrapped.key_version, &key)?;
        table.rewrap(&subject, rewrapped).await?;
        report.rewrapped += 1;
    }
    Ok(report)
}
