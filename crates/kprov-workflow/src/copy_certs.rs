//! The certificates new masters share, on the side that touches things:
//! reading them from the certificate directory for `kprov init phase
//! upload-certs` (the phase itself is in [`crate::init`]), and
//! [`download`], which fetches `kube-system/kubeadm-certs` with a
//! bootstrap token and opens it, for a master that joins. The sealing,
//! the objects and the comparisons are kprov-controlplane's `copy_certs`.

use std::path::Path;

use kprov_controlplane::copy_certs::{self, CertificateKey, CopyCertsError, SharedFiles};
use kprov_core::BootstrapToken;
use kprov_host::Root;

use crate::{Context, Error};

/// The shared files found under `cert_dir` (node path under `root`). A
/// file that is not there is left out (kubeadm uploads it empty: an
/// external CA has no ca.key); without the cluster CA there is nothing to
/// share.
pub fn read_shared_files(root: &Root, cert_dir: &Path) -> Result<SharedFiles, Error> {
    let mut files = SharedFiles::new();
    for path in copy_certs::SHARED_FILES {
        let node_path = cert_dir.join(path);
        let bytes = kprov_host::fs::read(root, &node_path)
            .context(|| format!("reading {}", node_path.display()))?;
        if let Some(bytes) = bytes {
            files.insert(path, bytes);
        }
    }
    if files.get("ca.crt").is_none() {
        return Err(Error::failed(format!(
            "{} does not exist: run `kprov init phase certs` first",
            cert_dir.join("ca.crt").display()
        )));
    }
    Ok(files)
}

/// The shared files uploaded to `server`, read with `token` (whose groups
/// the `kubeadm:kubeadm-certs` role lets read them), trusting only
/// `ca_pem`, and opened with `key`. Nothing is written: the caller decides
/// where the files go, once they all opened. Errors are named: no upload
/// (expired or never made), a wrong key, a malformed upload.
pub fn download(
    rt: &tokio::runtime::Handle,
    server: &str,
    ca_pem: &[u8],
    token: &BootstrapToken,
    key: &CertificateKey,
) -> Result<SharedFiles, Error> {
    let secret = rt
        .block_on(kprov_kube::get_secret_with_token(
            server,
            ca_pem,
            token,
            copy_certs::NAMESPACE,
            copy_certs::SECRET_NAME,
        ))
        .context(|| "downloading the shared certificates".into())?
        .ok_or(CopyCertsError::NotFound)?;
    Ok(copy_certs::decrypt_secret(&secret, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_missing_on_disk_are_left_out_and_the_ca_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let pki = dir.path().join("etc/kubernetes/pki");
        std::fs::create_dir_all(pki.join("etcd")).unwrap();
        let node_dir = Path::new("/etc/kubernetes/pki");
        assert_eq!(
            read_shared_files(&root, node_dir).unwrap_err().to_string(),
            "/etc/kubernetes/pki/ca.crt does not exist: run `kprov init phase certs` first"
        );
        std::fs::write(pki.join("ca.crt"), b"CA").unwrap();
        std::fs::write(pki.join("etcd/ca.key"), b"ETCD KEY").unwrap();
        let files = read_shared_files(&root, node_dir).unwrap();
        assert_eq!(files.paths(), ["ca.crt", "etcd/ca.key"]);
        assert_eq!(files.get("etcd/ca.key"), Some(&b"ETCD KEY"[..]));
    }
}
