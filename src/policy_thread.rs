//! One thread for every policy build and every old policy's drop.
//!
//! Building a policy allocates short-lived heap (with 1000 patterns, ~10 MiB inside the regex
//! compiler, freed when the build ends). glibc gives each thread an arena of its own and keeps
//! what was freed in it for that arena, so builds spread over the blocking pool's threads (and
//! the startup build on the main thread) each left their own ~10 MiB behind: peak RSS with 1M
//! names and 1000 patterns was 89.5 MiB where it is 64 MiB without patterns (bench, one run).
//! On one thread each build reuses the heap the one before it freed.

use std::{io, sync::mpsc, thread};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct PolicyThread {
    jobs: mpsc::Sender<Job>,
}

impl PolicyThread {
    pub fn spawn() -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("hushd-policy".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the policy thread and waits for it without blocking the runtime; `None`
    /// if the thread is gone (it only ends when every handle is dropped, or a job panicked).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.submit(move || {
            let _ = reply.send(work());
        })?;
        result.await.ok()
    }

    /// `run`, for a caller that may block its thread (startup, before anything is served).
    pub fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, result) = mpsc::sync_channel(1);
        self.submit(move || {
            let _ = reply.send(work());
        })?;
        result.recv().ok()
    }

    /// Drops `value` on the policy thread: freeing a large policy takes long enough to stall a
    /// runtime thread, and its heap goes back to the arena the next build takes from.
    pub fn drop_later<T: Send + 'static>(&self, value: T) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(Box::new(move || drop(value))) {
            drop(job);
        }
    }

    fn submit(&self, job: impl FnOnce() + Send + 'static) -> Option<()> {
        self.jobs.send(Box::new(job)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_job_runs_on_the_one_thread() {
        let t = PolicyThread::spawn().unwrap();
        let a = t.run(|| thread::current().id()).await.unwrap();
        let b = t.run(|| thread::current().id()).await.unwrap();
        let c = {
            let t = t.clone();
            tokio::task::spawn_blocking(move || t.run_blocking(|| thread::current().id()))
                .await
                .unwrap()
                .unwrap()
        };
        assert_eq!((a, b), (c, c));
        assert_ne!(a, thread::current().id());
    }
}
