//! The certificates a new master needs, shared through the cluster the way
//! `kubeadm init phase upload-certs` shares them (kubeadm v1.20's
//! `phases/copycerts` and `util/crypto`), so that kubeadm and kprov can
//! each read what the other uploaded:
//!
//! - the cluster CA, the front-proxy CA, etcd's CA (certificate and key
//!   each) and the service-account key pair ([`SHARED_FILES`]), read from
//!   the certificate directory;
//! - each file sealed with AES-256-GCM under a 32-byte key (the
//!   *certificate key*, 64 hex characters on the command line): a random
//!   12-byte nonce, then the ciphertext with its 16-byte tag appended, no
//!   associated data — Go's `gcm.Seal(nonce, nonce, data, nil)`;
//! - stored in the Secret `kube-system/kubeadm-certs` (type Opaque) under
//!   the file's name with `/` turned into `-` (`etcd/ca.crt` is
//!   `etcd-ca.crt`); a file missing on disk (an external CA's key) is an
//!   empty entry, as kubeadm writes it;
//! - owned (an ownerReference with `controller: true`) by the Secret of a
//!   bootstrap token that lives two hours and can do nothing else (no
//!   usages, no groups): when the token expires, the token cleaner deletes
//!   its Secret and the garbage collector deletes kubeadm-certs with it;
//! - readable by the default node-token group only through the Role and
//!   RoleBinding `kubeadm:kubeadm-certs` (`get` on that one Secret).
//!
//! Pure: keys, sealing, opening and the objects. kprov-workflow reads the
//! files and talks to the API server.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kprov_core::BootstrapToken;
use rand_core::{OsRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::bootstrap::{group, meta};
use crate::objects::ApiPlan;
use crate::token::{self, TokenSpec, Ttl, DEFAULT_NODE_GROUP};

/// The Secret's name (kubeadm's `KubeadmCertsSecret`).
pub const SECRET_NAME: &str = "kubeadm-certs";
/// Its namespace.
pub const NAMESPACE: &str = "kube-system";
/// The Role and RoleBinding that let bootstrap tokens read it.
pub const RBAC_NAME: &str = "kubeadm:kubeadm-certs";
/// The description of the token that owns it, as kubeadm writes it.
pub const TOKEN_DESCRIPTION: &str = "Proxy for managing TTL for the kubeadm-certs secret";
/// How long an upload lives (kubeadm's `DefaultCertTokenDuration`).
pub const TOKEN_TTL: Duration = Duration::from_secs(2 * 3600);
/// The certificate key's length in bytes (kubeadm's `CertificateKeySize`).
pub const KEY_LEN: usize = 32;
/// AES-GCM's tag length.
const TAG_LEN: usize = 16;

/// The files shared among masters, relative to the certificate
/// directory: kubeadm's `certsToTransfer` for a local etcd.
pub const SHARED_FILES: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
];

/// The Secret's data key for a file: its relative path with `/` as `-`.
pub fn data_key(path: &str) -> String {
    path.replace('/', "-")
}

/// Why sharing or reading the certificates failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyCertsError {
    /// A certificate key that is not 64 hex characters (its value is a
    /// secret and is never repeated).
    #[error("--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it), {0}")]
    KeyFormat(String),
    /// An entry that does not open with the key.
    #[error("certificate key does not decrypt kubeadm-certs (wrong key?): its entry {entry} fails AES-GCM authentication")]
    WrongKey {
        /// The data key.
        entry: String,
    },
    /// An entry too short to be sealed data.
    #[error("kubeadm-certs entry {entry} is {len} bytes, too short for AES-GCM's nonce and tag")]
    Malformed {
        /// The data key.
        entry: String,
        /// Its length.
        len: usize,
    },
    /// An entry kubeadm and kprov always write is missing.
    #[error("kubeadm-certs has no entry {entry} (not written by kubeadm or kprov?)")]
    MissingEntry {
        /// The data key.
        entry: String,
    },
    /// No upload to read.
    #[error("no kubeadm-certs in kube-system (expired after 2 h, or never uploaded: run kprov init phase upload-certs)")]
    NotFound,
}

/// The 32-byte key the shared certificates are sealed with. Never shown
/// by `Debug`; [`CertificateKey::expose_hex`] gives the text the user
/// keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateKey([u8; KEY_LEN]);

impl CertificateKey {
    /// A new key from the OS's random source.
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// The key as 64 lower-case hex characters: a secret.
    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn aead(&self) -> LessSafeKey {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is an AES-256 key"));
        LessSafeKey::new(unbound)
    }
}

impl fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertificateKey(<redacted>)")
    }
}

impl FromStr for CertificateKey {
    type Err = CopyCertsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.chars().count();
        if len != 2 * KEY_LEN {
            return Err(CopyCertsError::KeyFormat(format!("got {len} character(s)")));
        }
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(s, &mut key).map_err(|_| {
            CopyCertsError::KeyFormat("got a character that is not hexadecimal".into())
        })?;
        Ok(Self(key))
    }
}

/// Shared files by path relative to the certificate directory. They hold
/// private keys: `Debug` lists names and sizes only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SharedFiles(BTreeMap<String, Vec<u8>>);

impl SharedFiles {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.0.insert(path.into(), bytes);
    }

    /// A file's bytes.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.0.get(path).map(Vec::as_slice)
    }

    /// The files, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The paths, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

impl fmt::Debug for SharedFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, format!("{} bytes", v.len()))),
            )
            .finish()
    }
}

/// Seals `plaintext` under `key` with `nonce`: the nonce, then the
/// ciphertext and tag. [`encrypt`] draws the nonce; this form is for
/// tests that need fixed bytes.
pub fn seal(key: &CertificateKey, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let mut in_out = plaintext.to_vec();
    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut in_out,
        )
        .unwrap_or_else(|_| unreachable!("AES-GCM seals any file that fits in memory"));
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    out
}

/// Seals `plaintext` under `key` with a random nonce, as kubeadm's
/// `EncryptBytes` does.
pub fn encrypt(key: &CertificateKey, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    seal(key, nonce, plaintext)
}

/// Opens what [`encrypt`] (or kubeadm's `EncryptBytes`) sealed; `entry`
/// names the data in errors.
pub fn decrypt(
    key: &CertificateKey,
    sealed: &[u8],
    entry: &str,
) -> Result<Vec<u8>, CopyCertsError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CopyCertsError::Malformed {
            entry: entry.to_string(),
            len: sealed.len(),
        });
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .unwrap_or_else(|_| unreachable!("the split gives 12 bytes"));
    let mut in_out = body.to_vec();
    let plain = key
        .aead()
        .open_in_place(nonce, Aad::empty(), &mut in_out)
        .map_err(|_| CopyCertsError::WrongKey {
            entry: entry.to_string(),
        })?;
    Ok(plain.to_vec())
}

/// The token that owns an upload: two hours, no usages, no groups, so it
/// can neither authenticate nor sign.
pub fn token_spec(token: BootstrapToken) -> TokenSpec {
    TokenSpec {
        token,
        description: TOKEN_DESCRIPTION.into(),
        ttl: Ttl::from_duration(TOKEN_TTL),
        usages: Vec::new(),
        groups: Vec::new(),
    }
}

/// The reference from kubeadm-certs to its token's Secret (`uid` as the
/// API server gave it), as Go's `metav1.NewControllerRef` makes it.
pub fn owner_reference(token_id: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: token::secret_name(token_id),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The Secret holding `files` sealed under `key`, owned by `owner`. Every
/// entry of [`SHARED_FILES`] is written; a file `files` lacks is empty.
pub fn certs_secret(files: &SharedFiles, key: &CertificateKey, owner: OwnerReference) -> Secret {
    let data = SHARED_FILES
        .iter()
        .map(|path| {
            let sealed = files
                .get(path)
                .map(|bytes| encrypt(key, bytes))
                .unwrap_or_default();
            (data_key(path), ByteString(sealed))
        })
        .collect();
    Secret {
        metadata: ObjectMeta {
            owner_references: Some(vec![owner]),
            ..meta(SECRET_NAME, Some(NAMESPACE))
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The files a kubeadm-certs Secret holds, opened with `key`: every entry
/// of [`SHARED_FILES`] must be there; empty ones are files that were not
/// uploaded and are left out. All or nothing: one entry that does not
/// open fails the whole read. Entries of other names (kubeadm's
/// external-etcd ones) are ignored.
pub fn decrypt_secret(
    secret: &Secret,
    key: &CertificateKey,
) -> Result<SharedFiles, CopyCertsError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut sealed = Vec::new();
    for path in SHARED_FILES {
        let entry = data_key(path);
        match data.get(&entry) {
            Some(bytes) => sealed.push((path, entry, bytes)),
            None => return Err(CopyCertsError::MissingEntry { entry }),
        }
    }
    let mut files = SharedFiles::new();
    for (path, entry, bytes) in sealed {
        if !bytes.0.is_empty() {
            files.insert(path, decrypt(key, &bytes.0, &entry)?);
        }
    }
    Ok(files)
}

/// How an uploaded Secret compares with what would be uploaded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// The same files under the same key.
    Same,
    /// It does not open with the key (another key's upload).
    OtherKey,
    /// It opens, but these files differ (paths).
    Differs(Vec<String>),
}

/// Compares `secret` with `files` under `key`. AES-GCM's random nonce
/// makes every upload's ciphertext new, so uploads are compared by what
/// they decrypt to, never by their bytes.
pub fn compare(secret: &Secret, key: &CertificateKey, files: &SharedFiles) -> Comparison {
    let Ok(uploaded) = decrypt_secret(secret, key) else {
        return Comparison::OtherKey;
    };
    let differs: Vec<String> = SHARED_FILES
        .iter()
        .filter(|p| uploaded.get(p) != files.get(p))
        .map(|p| p.to_string())
        .collect();
    if differs.is_empty() {
        Comparison::Same
    } else {
        Comparison::Differs(differs)
    }
}

/// The token (by id) that owns `secret`, if its controller reference
/// names a bootstrap token's Secret.
pub fn owner_token_id(secret: &Secret) -> Option<String> {
    secret
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.kind == "Secret" && r.controller == Some(true))
        .and_then(|r| r.name.strip_prefix("bootstrap-token-"))
        .map(str::to_string)
}

/// The Role that may `get` kubeadm-certs and its binding to the default
/// node-token group, as an API plan.
pub fn rbac() -> ApiPlan {
    let role = Role {
        metadata: meta(RBAC_NAME, Some(NAMESPACE)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec![SECRET_NAME.into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(RBAC_NAME, Some(NAMESPACE)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: RBAC_NAME.into(),
        },
        subjects: Some(vec![group(DEFAULT_NODE_GROUP)]),
    };
    let mut plan = ApiPlan::new("the role that lets bootstrap tokens read kubeadm-certs");
    plan.extend([role]);
    plan.extend([binding]);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CertificateKey {
        CertificateKey([byte; KEY_LEN])
    }

    fn files() -> SharedFiles {
        let mut f = SharedFiles::new();
        for path in SHARED_FILES {
            f.insert(path, format!("-----BEGIN {path}-----\n").into_bytes());
        }
        f
    }

    fn owner() -> OwnerReference {
        owner_reference("abcdef", "0b1c2d3e-0000-4000-8000-000000000001")
    }

    #[test]
    fn keys_are_64_hex_characters_and_errors_name_the_flag_not_the_value() {
        let hex64 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k: CertificateKey = hex64.parse().unwrap();
        assert_eq!(k.expose_hex(), hex64.to_lowercase());
        for (bad, error) in [
            ("", "--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it), got 0 character(s)"),
            ("abcd", "--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it), got 4 character(s)"),
            (&"a".repeat(65), "--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it), got 65 character(s)"),
            (&format!("{}g", &hex64[..63]), "--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it), got a character that is not hexadecimal"),
            (&format!("{}é", &hex64[..63]), "--certificate-key: expected 64 hexadecimal characters (a 32-byte key, as `kprov init --upload-certs` prints it), got a character that is not hexadecimal"),
        ] {
            assert_eq!(bad.parse::<CertificateKey>().unwrap_err().to_string(), error, "{bad:?}");
        }
        assert_eq!(format!("{k:?}"), "CertificateKey(<redacted>)");
    }

    #[test]
    fn generated_keys_differ_and_parse_back() {
        let (a, b) = (CertificateKey::generate(), CertificateKey::generate());
        assert_ne!(a, b);
        assert_eq!(a.expose_hex().parse::<CertificateKey>().unwrap(), a);
    }

    #[test]
    fn sealed_data_is_the_nonce_then_ciphertext_and_tag_and_opens_again() {
        let k = key(7);
        let sealed = seal(&k, [9; NONCE_LEN], b"hello");
        assert_eq!(sealed.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(&sealed[..NONCE_LEN], &[9; NONCE_LEN]);
        assert_eq!(decrypt(&k, &sealed, "x").unwrap(), b"hello");
        // Random nonces: the same file never seals to the same bytes.
        assert_ne!(encrypt(&k, b"hello"), encrypt(&k, b"hello"));
        assert_eq!(decrypt(&k, &encrypt(&k, b""), "x").unwrap(), b"");
    }

    /// Go's AES-256-GCM (crypto/cipher, as kubeadm's EncryptBytes calls
    /// it) with the key 32 × 0x01 and the nonce 12 × 0x02 seals
    /// "kubeadm" to the fixture's bytes (tests/fixtures/copy-certs/INDEX
    /// says how they were made).
    #[test]
    fn the_layout_is_kubeadms() {
        let sealed = seal(&key(1), [2; NONCE_LEN], b"kubeadm");
        assert_eq!(hex::encode(&sealed), GO_SEALED);
        let opened = decrypt(&key(1), &hex::decode(GO_SEALED).unwrap(), "x").unwrap();
        assert_eq!(opened, b"kubeadm");
    }

    const GO_SEALED: &str = include_str!("../tests/fixtures/copy-certs/kubeadm-sealed.hex");

    #[test]
    fn a_wrong_key_or_short_data_is_a_named_error() {
        let sealed = encrypt(&key(1), b"secret");
        assert_eq!(
            decrypt(&key(2), &sealed, "ca.key").unwrap_err().to_string(),
            "certificate key does not decrypt kubeadm-certs (wrong key?): its entry ca.key fails AES-GCM authentication"
        );
        assert_eq!(
            decrypt(&key(1), &sealed[..20], "sa.key")
                .unwrap_err()
                .to_string(),
            "kubeadm-certs entry sa.key is 20 bytes, too short for AES-GCM's nonce and tag"
        );
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(matches!(
            decrypt(&key(1), &flipped, "ca.crt"),
            Err(CopyCertsError::WrongKey { .. })
        ));
    }

    #[test]
    fn the_secret_holds_every_shared_file_under_kubeadms_names() {
        let s = certs_secret(&files(), &key(3), owner());
        assert_eq!(s.metadata.name.as_deref(), Some("kubeadm-certs"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let keys: Vec<&str> = s
            .data
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "ca.crt",
                "ca.key",
                "etcd-ca.crt",
                "etcd-ca.key",
                "front-proxy-ca.crt",
                "front-proxy-ca.key",
                "sa.key",
                "sa.pub"
            ]
        );
        let refs = s.metadata.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "bootstrap-token-abcdef");
        assert_eq!(refs[0].kind, "Secret");
        assert_eq!(refs[0].api_version, "v1");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(refs[0].block_owner_deletion, Some(true));
        assert_eq!(owner_token_id(&s).as_deref(), Some("abcdef"));
        // Nothing in it is plaintext.
        for v in s.data.as_ref().unwrap().values() {
            assert!(!String::from_utf8_lossy(&v.0).contains("BEGIN"));
        }
    }

    #[test]
    fn the_secret_decrypts_to_the_files_and_missing_files_stay_missing() {
        let mut f = files();
        let s = certs_secret(&f, &key(3), owner());
        assert_eq!(decrypt_secret(&s, &key(3)).unwrap(), f);

        // An external CA: no ca.key on disk, an empty entry, as kubeadm.
        f.0.remove("ca.key");
        let s = certs_secret(&f, &key(3), owner());
        assert!(s.data.as_ref().unwrap()["ca.key"].0.is_empty());
        let back = decrypt_secret(&s, &key(3)).unwrap();
        assert_eq!(back, f);
        assert!(back.get("ca.key").is_none());
    }

    #[test]
    fn reading_an_upload_is_all_or_nothing() {
        let mut s = certs_secret(&files(), &key(3), owner());
        assert_eq!(
            decrypt_secret(&s, &key(4)).unwrap_err().to_string(),
            "certificate key does not decrypt kubeadm-certs (wrong key?): its entry ca.crt fails AES-GCM authentication"
        );
        // One entry sealed with another key fails the whole read.
        s.data
            .as_mut()
            .unwrap()
            .insert("sa.pub".into(), ByteString(encrypt(&key(4), b"other")));
        assert_eq!(
            decrypt_secret(&s, &key(3)).unwrap_err(),
            CopyCertsError::WrongKey {
                entry: "sa.pub".into()
            }
        );
        s.data.as_mut().unwrap().remove("etcd-ca.key");
        assert_eq!(
            decrypt_secret(&s, &key(3)).unwrap_err().to_string(),
            "kubeadm-certs has no entry etcd-ca.key (not written by kubeadm or kprov?)"
        );
    }

    #[test]
    fn uploads_compare_by_plaintext_not_by_ciphertext() {
        let f = files();
        let s = certs_secret(&f, &key(3), owner());
        assert_eq!(compare(&s, &key(3), &f), Comparison::Same);
        assert_eq!(compare(&s, &key(4), &f), Comparison::OtherKey);
        let mut changed = f.clone();
        changed.insert("sa.key", b"new".to_vec());
        assert_eq!(
            compare(&s, &key(3), &changed),
            Comparison::Differs(vec!["sa.key".into()])
        );
    }

    #[test]
    fn the_token_can_do_nothing_but_expire_in_two_hours() {
        let spec = token_spec("abcdef.0123456789abcdef".parse().unwrap());
        let now = time::OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
        let s = token::secret(&spec, now);
        let info = token::token_info(&s).unwrap();
        assert_eq!(info.expires.as_deref(), Some("2020-09-13T14:26:40Z"));
        assert!(info.usages.is_empty());
        assert!(info.groups.is_empty());
        assert_eq!(info.description, TOKEN_DESCRIPTION);
        assert!(!spec.signs());
    }

    #[test]
    fn the_role_gets_only_kubeadm_certs_for_the_node_token_group() {
        let plan = rbac();
        assert_eq!(
            plan.labels(),
            [
                "Role/kube-system/kubeadm:kubeadm-certs",
                "RoleBinding/kube-system/kubeadm:kubeadm-certs"
            ]
        );
        let json = serde_json::to_value(plan.objects[0].meta()).unwrap();
        assert_eq!(json["name"], "kubeadm:kubeadm-certs");
        let crate::objects::ApiObject::Role(role) = &plan.objects[0] else {
            panic!("not a role");
        };
        let rule = &role.rules.as_ref().unwrap()[0];
        assert_eq!(rule.verbs, ["get"]);
        assert_eq!(
            rule.resources.as_deref(),
            Some(&["secrets".to_string()][..])
        );
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["kubeadm-certs".to_string()][..])
        );
        let crate::objects::ApiObject::RoleBinding(binding) = &plan.objects[1] else {
            panic!("not a binding");
        };
        let subjects = binding.subjects.as_ref().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "Group");
        assert_eq!(subjects[0].name, DEFAULT_NODE_GROUP);
    }

    #[test]
    fn debug_never_shows_file_contents() {
        let shown = format!("{:?}", files());
        assert!(shown.contains("\"ca.key\": \"23 bytes\""), "{shown}");
        assert!(!shown.contains("BEGIN"));
    }
}
