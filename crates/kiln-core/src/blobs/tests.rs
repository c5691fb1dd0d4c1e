//! The blob store against a real directory: verification, per-token holds, restarts, quotas, expiry.

use super::*;
use crate::objects::DiskObjects;

async fn service(dir: &std::path::Path, cfg: BlobConfig) -> Arc<BlobService> {
    let objects = Arc::new(DiskObjects::open(dir).unwrap());
    Arc::new(BlobService::open(cfg, objects).await.unwrap())
}

#[test]
fn hashes_parse_only_in_their_one_form() {
    let h = BlobHash::of(b"hello");
    assert_eq!(BlobHash::parse(&h.to_string()), Some(h));
    let upper = h.to_string().to_uppercase().replace("SHA256", "sha256");
    for bad in ["", "sha256:", "sha1:00", &upper, &h.hex(), &format!("{h}0")] {
        assert_eq!(BlobHash::parse(bad), None, "{bad:?}");
    }
}

#[tokio::test]
async fn uploads_are_verified_held_per_token_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = service(dir.path(), BlobConfig::default()).await;
    let bytes = Bytes::from_static(b"some bytes");
    let hash = BlobHash::of(&bytes);
    // The wrong bytes store nothing.
    let wrong = blobs
        .upload("a", hash, Bytes::from_static(b"other bytes"))
        .await;
    assert!(
        matches!(wrong, Err(BlobError::Mismatch { .. })),
        "{wrong:?}"
    );
    assert_eq!(blobs.stats(), BlobStats::default());
    assert_eq!(blobs.check("a", &[hash]), [false]);

    blobs.upload("a", hash, bytes.clone()).await.unwrap();
    assert_eq!(blobs.check("a", &[hash]), [true]);
    // Another token neither sees nor reads it.
    assert_eq!(blobs.check("b", &[hash]), [false]);
    assert!(matches!(
        blobs.read("b", hash).await,
        Err(BlobError::Missing(_))
    ));
    assert!(blobs.finalize("b", &[hash]).is_err());
    blobs.finalize("a", &[hash]).unwrap();
    assert_eq!(blobs.read("a", hash).await.unwrap(), bytes);
    // The same bytes from another token are stored once.
    blobs.upload("b", hash, bytes.clone()).await.unwrap();
    assert_eq!(blobs.stats().blobs, 1);
    assert_eq!(blobs.stats().bytes, bytes.len() as u64);
    drop(blobs);

    let again = service(dir.path(), BlobConfig::default()).await;
    assert_eq!(again.check("a", &[hash]), [true]);
    assert_eq!(again.check("b", &[hash]), [true]);
    assert_eq!(again.held_by("a"), bytes.len() as u64);
}

#[tokio::test]
async fn quotas_refuse_and_idle_holds_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BlobConfig {
        ttl: Duration::from_millis(50),
        max_blob_bytes: 150,
        storage_bytes: 200,
        owner_storage_bytes: 120,
    };
    let blobs = service(dir.path(), cfg).await;
    let blob = |n: usize, fill: u8| Bytes::from(vec![fill; n]);
    let up = |owner: &'static str, b: Bytes| {
        let h = BlobHash::of(&b);
        let blobs = &blobs;
        async move { blobs.upload(owner, h, b).await }
    };
    assert!(matches!(
        up("a", blob(151, 1)).await,
        Err(BlobError::TooLarge { .. })
    ));
    up("a", blob(100, 1)).await.unwrap();
    assert!(matches!(
        up("a", blob(30, 2)).await,
        Err(BlobError::OwnerQuota { .. })
    ));
    assert!(matches!(
        up("b", blob(110, 3)).await,
        Err(BlobError::StorageFull { .. })
    ));
    // Equal bytes take no more room, only the token's quota (the total is checked all the
    // same: its answer must not say whether another token holds them).
    up("b", blob(100, 1)).await.unwrap();
    assert_eq!(blobs.stats().bytes, 100);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(blobs.reap().await, 2);
    assert_eq!(blobs.stats(), BlobStats::default());
    assert!(std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .next()
        .is_none());
    up("b", blob(60, 3)).await.unwrap();
}
