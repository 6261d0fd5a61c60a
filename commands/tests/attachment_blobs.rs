//! The blob table and attachment sealing, run against both backends: what is stored comes
//! back, a retry stores nothing new, a blob opens only under its own id, customer and digest,
//! and never once the customer's key was destroyed.

use std::sync::Arc;

use egec_commands::attachments::{AttachmentError, Attachments};
use egec_commands::master_key::MasterKey;
use egec_commands::store::blobs::SealedBlob;
use egec_commands::store::open::{self, Stores};
use egec_commands::testing::{self, PgDropGuard};
use egec_commands::vault::Vault;
use egec_domain::CustomerId;
use secrecy::SecretString;
use uuid::Uuid;

#[allow(dead_code)]
enum Guard {
    Dir(tempfile::TempDir),
    Pg(PgDropGuard),
}

struct Env {
    stores: Stores,
    attachments: Attachments,
    vault: Arc<Vault>,
    _guard: Guard,
}

impl Env {
    fn with(stores: Stores, guard: Guard) -> Env {
        let master = MasterKey::from_hex(&SecretString::from("22".repeat(32))).expect("key");
        let vault = Arc::new(Vault::new(stores.keys.clone(), master, 16));
        Env {
            attachments: Attachments::new(stores.blobs.clone(), vault.clone()),
            stores,
            vault,
            _guard: guard,
        }
    }

    async fn sqlite() -> Env {
        let dir = testing::fresh_sqlite_dir();
        let stores = open::open(None, &dir.path().join("data"), 4)
            .await
            .expect("open sqlite");
        Env::with(stores, Guard::Dir(dir))
    }

    async fn postgres() -> Env {
        let (url, guard) = testing::fresh_postgres().await;
        let stores = open::open(Some(&url), &std::env::temp_dir(), 4)
            .await
            .expect("open postgres");
        Env::with(stores, Guard::Pg(guard))
    }
}

fn blob(id: Uuid, customer: Uuid, fill: u8) -> SealedBlob {
    SealedBlob {
        id,
        customer_id: customer,
        key_version: 1,
        nonce: vec![fill; 12],
        ciphertext: vec![fill; 1000],
    }
}

async fn a_blob_is_stored_once_read_back_and_deleted(env: Env) {
    let blobs = env.stores.blobs.as_ref();
    let (id, customer) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(blobs.get(id).await.unwrap(), None);
    assert!(blobs.put(blob(id, customer, 1)).await.unwrap());
    assert!(
        !blobs.put(blob(id, customer, 2)).await.unwrap(),
        "a second put with the same id stores nothing"
    );
    assert_eq!(blobs.get(id).await.unwrap(), Some(blob(id, customer, 1)));
    blobs.delete(id).await.unwrap();
    assert_eq!(blobs.get(id).await.unwrap(), None);
}

async fn sealed_content_opens_only_under_its_own_id_customer_and_digest(env: Env) {
    let customer = CustomerId::from_uuid(Uuid::now_v7());
    let id = Uuid::now_v7();
    let content = b"%PDF-1.7 the passport scan of Jane".to_vec();
    let stored = env.attachments.store(customer, id, &content).await.unwrap();
    assert!(stored.created);
    assert_eq!(env.attachments.owner(id).await.unwrap(), Some(customer));
    let opened = env
        .attachments
        .open(customer, id, &stored.ciphertext_hash)
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), content.as_slice());

    // Encrypted at rest: the stored bytes do not hold the content.
    let raw = env.stores.blobs.get(id).await.unwrap().unwrap();
    assert!(!raw.ciphertext.windows(8).any(|w| w == &content[..8]));

    // A wrong digest, another customer, or the same bytes under another id do not open.
    assert!(matches!(
        env.attachments.open(customer, id, &"00".repeat(32)).await,
        Err(AttachmentError::Mismatch)
    ));
    let other = CustomerId::from_uuid(Uuid::now_v7());
    assert!(matches!(
        env.attachments
            .open(other, id, &stored.ciphertext_hash)
            .await,
        Err(AttachmentError::Mismatch)
    ));
    let copy = Uuid::now_v7();
    env.stores
        .blobs
        .put(SealedBlob { id: copy, ..raw })
        .await
        .unwrap();
    assert!(matches!(
        env.attachments
            .open(customer, copy, &stored.ciphertext_hash)
            .await,
        Err(AttachmentError::Mismatch)
    ));

    // A retry under the same id keeps the first blob and answers with its digest.
    let again = env.attachments.store(customer, id, &content).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.ciphertext_hash, stored.ciphertext_hash);
}

async fn once_the_customers_key_is_destroyed_nothing_opens_and_nothing_is_stored(env: Env) {
    let customer = CustomerId::from_uuid(Uuid::now_v7());
    let id = Uuid::now_v7();
    let stored = env
        .attachments
        .store(customer, id, b"\x89PNG\r\n\x1a\n a photo")
        .await
        .unwrap();
    let destroyed = env.vault.destroy(&customer.subject()).await.unwrap();
    assert_eq!(destroyed.len(), 1);
    assert!(matches!(
        env.attachments
            .open(customer, id, &stored.ciphertext_hash)
            .await,
        Err(AttachmentError::Erased)
    ));
    assert!(matches!(
        env.attachments
            .store(customer, Uuid::now_v7(), b"\x89PNG\r\n\x1a\n more")
            .await,
        Err(AttachmentError::Erased)
    ));
    // The sealed bytes stay, unreadable.
    assert!(env.stores.blobs.get(id).await.unwrap().is_some());
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::postgres().await).await;
                }
            )*
        }
    };
}

both!(
    a_blob_is_stored_once_read_back_and_deleted,
    sealed_content_opens_only_under_its_own_id_customer_and_digest,
    once_the_customers_key_is_destroyed_nothing_opens_and_nothing_is_stored,
);
