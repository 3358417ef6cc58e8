//! The Debian package: packaging/build-deb.sh builds it (from this test's debug binary, so CI
//! need not make a release build), it unpacks into a throwaway root, the installed hushd checks
//! the installed config and lists, the installed man pages render without a groff warning,
//! the config and lists are conffiles, the unit runs the installed binary, and lintian finds
//! nothing above info level. Needs dpkg-dev, binutils, man-db and lintian (CI installs them;
//! HUSHD_REQUIRE_TOOLS makes a missing one a failure).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn build_deb(out: &Path) -> PathBuf {
    let built = run(Command::new("bash")
        .arg(support::project_root().join("packaging/build-deb.sh"))
        .args(["--binary", support::HUSHD, "--out"])
        .arg(out));
    let stdout = String::from_utf8(built.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("build-deb.sh printed no path"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_package_builds_installs_checks_its_config_and_passes_lintian() {
    let tools = ["dpkg-deb", "dpkg-shlibdeps", "strip", "man", "lintian"];
    if tools.iter().any(|t| support::tool(t).is_none()) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(work.path());
    let version = env!("CARGO_PKG_VERSION");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("hushd_{version}-")) && name.ends_with(".deb"),
        "{name}"
    );

    // Install into a throwaway root (no maintainer scripts: they need the host's systemd).
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = work.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));

    for path in [
        "usr/sbin/hushd",
        "etc/hushd/hushd.toml",
        "etc/hushd/blocklists/xiaomi.toml",
        "usr/lib/systemd/system/hushd.service",
        "usr/share/man/man8/hushd.8.gz",
        "usr/share/man/man5/hushd.toml.5.gz",
        "usr/share/bash-completion/completions/hushd",
        "usr/share/zsh/vendor-completions/_hushd",
        "usr/share/fish/vendor_completions.d/hushd.fish",
        "usr/share/doc/hushd/copyright",
        "usr/share/doc/hushd/changelog.Debian.gz",
        "usr/share/doc/hushd/README.md.gz",
        "usr/share/doc/hushd/examples/hushd.nft",
    ] {
        assert!(root.join(path).is_file(), "the package has no /{path}");
    }

    // The completions offer what an admin runs, not the packagers' `generate`.
    for path in [
        "usr/share/bash-completion/completions/hushd",
        "usr/share/zsh/vendor-completions/_hushd",
        "usr/share/fish/vendor_completions.d/hushd.fish",
    ] {
        let script = std::fs::read_to_string(root.join(path)).unwrap();
        assert!(script.contains("explain"), "/{path} lacks explain");
        assert!(!script.contains("generate"), "/{path} offers generate");
    }

    // Every file under /etc is a conffile, so an admin's edits survive upgrades.
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    let etc: Vec<String> = files_under(&root.join("etc"))
        .iter()
        .map(|p| format!("/{}", p.strip_prefix(&root).unwrap().display()))
        .collect();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), etc);
    assert!(etc.len() > 10, "{etc:?}");

    // The unit runs the installed binary and has systemd make its state and log folders.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/hushd.service")).unwrap();
    for line in [
        "ExecStartPre=/usr/sbin/hushd check --config /etc/hushd/hushd.toml",
        "ExecStart=/usr/sbin/hushd --config /etc/hushd/hushd.toml",
        "StateDirectory=hushd",
        "LogsDirectory=hushd",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    assert!(!unit.contains("/usr/local"), "{unit}");

    // The installed hushd checks the installed config and lists. The config's evidence store is
    // /var/lib/hushd/evidence.db, which systemd's StateDirectory= creates on the host: here it
    // is the root's own, in a copy of the config beside the original (so its relative
    // blocklists folder is the installed one) that differs in that line alone.
    let config = std::fs::read_to_string(root.join("etc/hushd/hushd.toml")).unwrap();
    let store = "path = \"/var/lib/hushd/evidence.db\"";
    assert_eq!(config.matches(store).count(), 1, "{config}");
    std::fs::create_dir_all(root.join("var/lib/hushd")).unwrap();
    let in_root = format!(
        "path = \"{}\"",
        root.join("var/lib/hushd/evidence.db").display()
    );
    let checked = root.join("etc/hushd/check.toml");
    std::fs::write(&checked, config.replace(store, &in_root)).unwrap();
    let check = run(Command::new(root.join("usr/sbin/hushd"))
        .args(["check", "--config"])
        .arg(&checked));
    let summary = String::from_utf8_lossy(&check.stdout);
    for list in ["xiaomi", "samsung", "doh", "allow"] {
        assert!(summary.contains(list), "no {list} in:\n{summary}");
    }

    // The man pages render, with groff's warnings as failures.
    let pages: Vec<PathBuf> = ["usr/share/man/man5", "usr/share/man/man8"]
        .iter()
        .flat_map(|d| files_under(&root.join(d)))
        .collect();
    assert!(pages.len() >= 3, "{pages:?}");
    for page in &pages {
        let out = run(Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0"));
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "{}: {warnings}", page.display());
        assert!(out.stdout.len() > 500, "{} is nearly empty", page.display());
    }
    let config_page = run(Command::new("man")
        .arg("-l")
        .arg(root.join("usr/share/man/man5/hushd.toml.5.gz"))
        .env("MANWIDTH", "80"));
    let text = String::from_utf8_lossy(&config_page.stdout);
    for heading in ["[server]", "[upstream]", "[querylog]", "List files"] {
        assert!(text.contains(heading), "hushd.toml(5) has no {heading}");
    }

    // lintian: no error or warning (info and pedantic tags are listed in packaging/README.md).
    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "lintian:\n{}\n{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// The maintainer scripts, run for real with stand-ins for the systemd helpers on PATH (they
/// record their arguments): a first install enables the unit, and only where systemd runs is
/// it reloaded and started, so `dpkg -i` in a chroot or an image build succeeds. A start that
/// fails (port 53 taken) leaves the package configured, with a message.
#[test]
fn the_maintainer_scripts_enable_the_unit_and_start_it_only_under_systemd() {
    let dir = support::project_root().join("packaging/debian");
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("calls.log");
    for helper in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
        let stub = bin.path().join(helper);
        // deb-systemd-invoke fails, as a start does when port 53 is held by another resolver.
        let status = if helper == "deb-systemd-invoke" { 1 } else { 0 };
        std::fs::write(
            &stub,
            format!("#!/bin/sh\necho \"{helper} $*\" >> \"$CALLS\"\nexit {status}\n"),
        )
        .unwrap();
        let mut mode = std::fs::metadata(&stub).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(&stub, mode).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    for (script, args) in [
        ("postinst", &["configure", ""][..]),
        ("prerm", &["remove"][..]),
        ("postrm", &["remove"][..]),
    ] {
        std::fs::write(&log, "").unwrap();
        let out = run(Command::new("sh")
            .arg(dir.join(script))
            .args(args)
            .env("PATH", &path)
            .env("CALLS", &log)
            .env_remove("DPKG_ROOT"));
        let calls = std::fs::read_to_string(&log).unwrap();
        let called = |c: &str| calls.lines().any(|l| l == c);
        match script {
            "postinst" => {
                assert!(called("deb-systemd-helper enable hushd.service"), "{calls}");
                assert_eq!(
                    called("deb-systemd-invoke start hushd.service"),
                    systemd_runs,
                    "{calls}"
                );
                if systemd_runs {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    assert!(stderr.contains("did not start"), "{stderr}");
                }
            }
            "prerm" => assert_eq!(
                called("deb-systemd-invoke stop hushd.service"),
                systemd_runs,
                "{calls}"
            ),
            _ => assert!(called("deb-systemd-helper mask hushd.service"), "{calls}"),
        }
        if !systemd_runs {
            assert!(
                !calls.contains("systemctl") && !calls.contains("deb-systemd-invoke"),
                "{script} {args:?} touched systemd where it does not run:\n{calls}"
            );
        }
    }
}
