//! [`join4`]: `tokio::join!` of four futures, without the trip through the scheduler that a
//! wake-up raised while the task is being polled costs.
//!
//! An attempt's step, start report, log forwarder and metrics tail run as one task. When the
//! step ends, its future cancels the token the start report and the tail wait on, and its pumps
//! close the log channel: each of those wakes the very task that is being polled. tokio then
//! puts the task at the back of its worker's queue as a yield and wakes another worker thread
//! to steal it, which it usually does: a futex wake-up of the other core and a move of the
//! attempt to it, at every step's end (BENCHMARKS.md, issue 19, tenth round). Here a wake-up
//! raised during the poll only marks the join, which polls its futures again before it
//! returns; a wake-up from anywhere else (an I/O event, another task, another thread) wakes the
//! task as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Passes over the futures one poll makes while they keep waking during it. Past that the task
/// yields to the scheduler as tokio's join would: tokio's cooperative budget makes a future that
/// spent it wake itself and return pending, which unbounded passes would spin on.
const PASSES: usize = 4;

/// Runs the four futures concurrently on the calling task until all are done, as `tokio::join!`
/// does; see the module docs for how it differs.
pub(crate) async fn join4<A: Future, B: Future, C: Future, D: Future>(
    a: A,
    b: B,
    c: C,
    d: D,
) -> (A::Output, B::Output, C::Output, D::Output) {
    let flag =
        Arc::new(Flag { polling: AtomicBool::new(false), woken: AtomicBool::new(false), task: Mutex::new(None) });
    let waker = Waker::from(flag.clone());
    let (mut a, mut b, mut c, mut d) = (Slot::new(a), Slot::new(b), Slot::new(c), Slot::new(d));
    std::future::poll_fn(move |cx| {
        flag.remember(cx.waker());
        let mut inner = Context::from_waker(&waker);
        for _ in 0..PASSES {
            flag.polling.store(true, SeqCst);
            // Cleared before the pass: whatever woke before it is seen by the polls below.
            flag.woken.store(false, SeqCst);
            // `&`, not `&&`: every future is polled in each pass.
            let done = a.poll(&mut inner) & b.poll(&mut inner) & c.poll(&mut inner) & d.poll(&mut inner);
            flag.polling.store(false, SeqCst);
            if done {
                return Poll::Ready((a.take(), b.take(), c.take(), d.take()));
            }
            // A wake-up after `polling` went false found it false and woke the task itself.
            if !flag.woken.load(SeqCst) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// The futures' waker: marks the join while it polls, wakes the task otherwise.
struct Flag {
    polling: AtomicBool,
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Flag {
    fn remember(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst)
            && let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner())
        {
            task.wake_by_ref();
        }
    }
}

/// One future of the join and, once it is done, its output.
enum Slot<F: Future> {
    Running(Pin<Box<F>>),
    Done(F::Output),
    Taken,
}

impl<F: Future> Slot<F> {
    fn new(f: F) -> Self {
        Slot::Running(Box::pin(f))
    }

    /// Polls the future if it still runs; whether it is done.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            Slot::Running(f) => match f.as_mut().poll(cx) {
                Poll::Ready(out) => {
                    *self = Slot::Done(out);
                    true
                }
                Poll::Pending => false,
            },
            Slot::Done(_) | Slot::Taken => true,
        }
    }

    fn take(&mut self) -> F::Output {
        match std::mem::replace(self, Slot::Taken) {
            Slot::Done(out) => out,
            Slot::Running(_) | Slot::Taken => unreachable!("taken once, after every future is done"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio_util::sync::CancellationToken;

    /// Counts the polls of the task it wraps, as tokio sees them.
    struct Counted<F: ?Sized> {
        f: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future + ?Sized> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, SeqCst);
            self.f.as_mut().poll(cx)
        }
    }

    type Joined = dyn Future<Output = (i32, i32, (), ())> + Send;

    /// Polls of a task whose join waits on a cancellation that another of its futures raises
    /// when notified: before the notification and at it.
    async fn polls_of(canceller_first: bool) -> usize {
        let polls = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(tokio::sync::Notify::new());
        let waited = CancellationToken::new();
        let waiter = {
            let waited = waited.clone();
            async move {
                waited.cancelled().await;
                0
            }
        };
        let canceller = {
            let go = go.clone();
            async move {
                go.notified().await;
                waited.cancel();
                1
            }
        };
        let joined: Pin<Box<Joined>> = if canceller_first {
            Box::pin(async { join4(canceller, waiter, async {}, async {}).await })
        } else {
            Box::pin(async { join4(waiter, canceller, async {}, async {}).await })
        };
        let task = tokio::spawn(Counted { f: joined, polls: polls.clone() });
        while polls.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        go.notify_one();
        let (a, b, (), ()) = task.await.unwrap();
        assert_eq!(a + b, 1);
        polls.load(SeqCst)
    }

    #[tokio::test]
    async fn a_wake_up_raised_by_one_future_is_taken_in_the_same_poll() {
        // Once before the notification, once at it: the cancellation raised within the second
        // poll was taken there, without the task being scheduled again. With the waiter first it
        // takes a second pass over the futures; `tokio::join!`, which starts each poll at the
        // next future, takes a third poll with the canceller first.
        assert_eq!(polls_of(false).await, 2);
        assert_eq!(polls_of(true).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_from_other_threads_are_not_lost() {
        for _ in 0..200 {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
            let sender = std::thread::spawn(move || {
                for i in 0..50 {
                    tx.blocking_send(i).unwrap();
                }
            });
            let got = join4(
                async {
                    let mut n = 0;
                    while rx.recv().await.is_some() {
                        n += 1;
                    }
                    n
                },
                tokio::time::sleep(std::time::Duration::from_millis(1)),
                async {},
                async { "x" },
            );
            let got =
                tokio::time::timeout(std::time::Duration::from_secs(20), got).await.expect("a lost wake-up hangs");
            assert_eq!(got.0, 50);
            sender.join().unwrap();
        }
    }

    #[tokio::test]
    async fn a_future_that_keeps_waking_itself_yields_instead_of_spinning() {
        // Wakes itself at every poll, forever pending until the flag is set by another task.
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = {
            let stop = stop.clone();
            std::future::poll_fn(move |cx| {
                if stop.load(SeqCst) {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
        };
        let stopper = tokio::spawn({
            let stop = stop.clone();
            async move { stop.store(true, SeqCst) }
        });
        // On a current-thread runtime the stopper runs only if the join yields.
        join4(spinning, async {}, async {}, async {}).await;
        stopper.await.unwrap();
    }
}
