//! Where keys, region and endpoint come from: the environment, or an
//! AWS profile with no AWS variables set.

use super::*;

#[test]
fn s3_credentials_and_endpoint_from_the_environment() {
    let m = Moto::start();
    m.make_bucket("envb");
    let data = sample(100_000, 2);
    m.put("envb", "k.img", &data);
    // nbdkit's bucket= key= form, the S3 alias, everything else from AWS_*.
    let out = nbdscript()
        .env("PATH", sys_path())
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", m.endpoint())
        .args([
            "S3",
            "bucket=envb",
            "key=k.img",
            "--run",
            "nbdcopy \"$uri\" -",
        ])
        .output()
        .expect("run nbdscript");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "bytes differ");
}

/// The AWS variables cleared, so only what a test sets is seen.
fn no_aws_env(c: &mut Command) -> &mut Command {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        c.env_remove(k);
    }
    c.env("PATH", sys_path())
}

#[test]
fn s3_keys_region_and_endpoint_from_an_aws_profile() {
    let m = Moto::start();
    m.make_bucket("profb");
    let data = sample(70_000, 3);
    m.put("profb", "p.img", &data);
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    let cred = aws.join("credentials");
    std::fs::write(
        &cred,
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[nbd]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile nbd]\nregion = us-east-1\nendpoint_url = {}\n",
            m.endpoint()
        ),
    )
    .unwrap();
    let home_s = home.path().display().to_string();
    // AWS_PROFILE picks the profile; keys, region and endpoint all come
    // from the two files.
    let out = no_aws_env(&mut nbdscript())
        .env("HOME", &home_s)
        .env("AWS_PROFILE", "nbd")
        .args(["s3", "s3://profb/p.img", "--run", "nbdcopy \"$uri\" -"])
        .output()
        .expect("run nbdscript");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "bytes differ");
    let dump = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = nbdscript();
        no_aws_env(&mut c)
            .env("HOME", &home_s)
            .envs(envs.iter().copied());
        let o = c
            .args(["--dump-plugin", "s3", "s3://profb/p.img"])
            .args(extra)
            .output()
            .expect("run nbdscript");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let d = dump(&[("AWS_PROFILE", "nbd")], &[]);
    let want = format!("credentials=profile nbd in {}", cred.display());
    assert!(d.contains(&want), "{d}");
    assert!(d.contains("size=70000"), "{d}");
    // Keys in the environment win over AWS_PROFILE, but not over profile=.
    let keys = [
        ("AWS_ACCESS_KEY_ID", ACCESS),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_PROFILE", "nbd"),
    ];
    let d = dump(&keys, &[]);
    assert!(d.contains("credentials=environment"), "{d}");
    let d = dump(&keys, &["profile=nbd"]);
    assert!(d.contains(&want), "{d}");
    // A profile that is not there is a usage error naming it and the files.
    let o = no_aws_env(&mut nbdscript())
        .env("HOME", &home_s)
        .env("AWS_PROFILE", "nope")
        .args(["s3", "s3://profb/p.img", "--run", "true"])
        .output()
        .expect("run nbdscript");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("\"nope\"") && e.contains(".aws/credentials"),
        "{e}"
    );
}
