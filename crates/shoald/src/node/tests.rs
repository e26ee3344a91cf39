use std::os::unix::fs::PermissionsExt;

use super::*;

fn certs(tag: &str) -> NodeCertificates {
    NodeCertificates {
        ca_pem: format!("ca {tag}"),
        cert_pem: format!("cert {tag}"),
        key_pem: format!("key {tag}"),
    }
}

#[test]
fn certificates_are_replaced_whole_with_no_temporary_file_left() {
    let dir = tempfile::tempdir().unwrap();
    save_certificates(dir.path(), &certs("one")).unwrap();
    save_certificates(dir.path(), &certs("two")).unwrap();
    let loaded = load_certificates(dir.path()).unwrap();
    assert_eq!(
        (loaded.ca_pem, loaded.cert_pem, loaded.key_pem),
        ("ca two".into(), "cert two".into(), "key two".into())
    );
    let mut names: Vec<String> = std::fs::read_dir(cert_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.pem", "node.key", "node.pem"]);
    let mode = std::fs::metadata(cert_dir(dir.path()).join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the key is readable by its owner only: {mode:o}"
    );
}
