//! Network namespaces for tests that need a firewall or addresses of their own. A namespace is
//! a thread that called `unshare(CLONE_NEWNET)`: a network namespace belongs to a thread, and
//! what that thread creates — sockets, processes (`ip`, `nft`, hushd), threads — lives in it.
//! Nothing sent inside reaches the host's network, and the namespace goes away with its thread
//! and the processes started in it.
//!
//! ```ignore
//! let Some(ns) = NetNs::new() else { return };   // skipped (or failed in CI) without root
//! ns.sh("nft -f nftables/hushd.nft");
//! let port = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr());
//! ```

use std::{
    process::{Command, Output},
    sync::mpsc,
    thread,
};

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace with `lo` up, and the thread that lives in it.
pub struct NetNs {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    /// The thread's id: `ip link set DEV netns TID` moves a device into this namespace.
    pub tid: i32,
}

impl NetNs {
    /// A new namespace, or `None` (with a note) where this process may not make one: it needs
    /// root (CAP_SYS_ADMIN) and `ip`. With HUSHD_REQUIRE_TOOLS set, as CI does, that is a
    /// failure instead.
    pub fn new() -> Option<Self> {
        super::tool("ip")?;
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("HUSHD_REQUIRE_TOOLS").is_none(),
                "network namespace tests must run as root (HUSHD_REQUIRE_TOOLS is set)"
            );
            eprintln!("note: not root, so no network namespace; skipping the test");
            return None;
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))
                    .and_then(|()| {
                        let out = Command::new("ip")
                            .args(["link", "set", "lo", "up"])
                            .output()
                            .map_err(|e| format!("ip: {e}"))?;
                        if out.status.success() {
                            Ok(nix::unistd::gettid().as_raw())
                        } else {
                            Err(String::from_utf8_lossy(&out.stderr).into_owned())
                        }
                    });
                let ok = made.is_ok();
                let _ = ready.send(made);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })
            .expect("spawn the namespace's thread");
        let tid = started
            .recv()
            .expect("the namespace's thread started")
            .unwrap_or_else(|e| panic!("cannot make a network namespace: {e}"));
        Some(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            tid,
        })
    }

    /// Runs `f` on the namespace's thread and returns what it returns. A panic in `f` is
    /// raised here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        self.jobs
            .as_ref()
            .expect("namespace open")
            .send(job)
            .expect("the namespace's thread is running");
        match rx.recv().expect("the job ran") {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs a program in the namespace and waits for it.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        let (program, args) = (
            program.to_string(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        self.run(move || {
            Command::new(&program)
                .args(&args)
                .current_dir(super::project_root())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
        })
    }

    /// Runs a shell command line in the namespace (from the project's root) and returns its
    /// stdout; a failure panics with its stderr.
    pub fn sh(&self, script: &str) -> String {
        let out = self.output("sh", &["-c", script]);
        assert!(
            out.status.success(),
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `future` to completion on a current-thread tokio runtime on the namespace's thread,
    /// so the sockets it opens are in the namespace.
    pub fn block_on<F>(&self, future: impl FnOnce() -> F + Send + 'static) -> F::Output
    where
        F: Future,
        F::Output: Send + 'static,
    {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(future())
        })
    }

    /// Connects this namespace and `other` with a veth pair: `here` gets `here_addr` (with its
    /// prefix, e.g. "192.0.2.1/24"), `there` in `other` gets `there_addr`; both are up.
    pub fn link(&self, here: &str, here_addr: &str, other: &Self, there: &str, there_addr: &str) {
        self.sh(&format!(
            "ip link add {here} type veth peer name {there} && ip link set {there} netns {tid} \
             && ip addr add {here_addr} dev {here} && ip link set {here} up",
            tid = other.tid
        ));
        other.sh(&format!(
            "ip addr add {there_addr} dev {there} && ip link set {there} up"
        ));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
